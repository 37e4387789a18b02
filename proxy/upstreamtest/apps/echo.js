// Echo app on Node's http module (upstreamtest). Records every request as
// one JSON line in $UPSTREAMTEST_LOG. Usage: node echo.js PORT
"use strict";
const http = require("http");
const fs = require("fs");
const log = process.env.UPSTREAMTEST_LOG;

const server = http.createServer((req, res) => {
  let n = 0;
  req.on("data", (c) => { n += c.length; });
  req.on("end", () => {
    const headers = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i].toLowerCase();
      headers[k] = k in headers ? headers[k] + ", " + req.rawHeaders[i + 1] : req.rawHeaders[i + 1];
    }
    const rec = { server: "node", method: req.method, target: req.url,
      proto: "HTTP/" + req.httpVersion, headers, body_len: n };
    fs.appendFileSync(log, JSON.stringify(rec) + "\n");
    const body = `echo ${req.method} ${req.url} user=${headers["x-stepgate-user"] || ""}\n`;
    res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.listen(Number(process.argv[2]), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
