// parsertest echo app on Express 4 with the body parsers and method
// override as commonly configured (versions pinned in package-lock.json):
// reports req.body[NAME], req.query[NAME], req.param(NAME) and the JSON body
// for the fields named in X-Matrix-Fields. Usage: node app.js PORT
"use strict";
const express = require("express");
const methodOverride = require("method-override");
const multer = require("multer");
const typeis = require("type-is");

const INDEX = /^(0|[1-9][0-9]*)$/;

function fields(req) {
  const raw = req.headers["x-matrix-fields"];
  if (!raw) throw new Error("no X-Matrix-Fields header");
  return JSON.parse(Buffer.from(raw, "base64").toString("utf8"));
}

// report is one value as the harness reads it: kind and base64 of its text.
function report(v) {
  let kind;
  let text;
  if (typeof v === "string") [kind, text] = ["string", v];
  else if (typeof v === "number") [kind, text] = ["number", String(v)];
  else if (typeof v === "boolean") [kind, text] = ["bool", String(v)];
  else if (v === null) [kind, text] = ["null", "null"];
  else if (Array.isArray(v)) [kind, text] = ["array", JSON.stringify(v)];
  else if (typeof v === "object") [kind, text] = ["object", JSON.stringify(v)];
  else [kind, text] = [typeof v, String(v)]; // req.body.constructor is a function
  return { kind, b64: Buffer.from(text, "utf8").toString("base64") };
}

// pointer walks an RFC 6901 pointer as JavaScript indexes a parsed
// document (doc.payee.name, doc.items[0]), own properties only.
function pointer(doc, ptr) {
  if (ptr === "") return [true, doc];
  if (!ptr.startsWith("/")) return [false];
  let cur = doc;
  for (let tok of ptr.slice(1).split("/")) {
    tok = tok.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(cur)) {
      if (!INDEX.test(tok) || Number(tok) >= cur.length) return [false];
    } else if (cur === null || typeof cur !== "object" || !Object.prototype.hasOwnProperty.call(cur, tok)) {
      return [false];
    }
    cur = cur[tok];
  }
  return [true, cur];
}

function echo(req, res, err) {
  let spec;
  try {
    spec = fields(req);
  } catch (e) {
    res.status(500).send(String(e));
    return;
  }
  const values = {};
  const out = { method: req.method, values };
  if (err) {
    out.error = `${err.name || "Error"}: ${err.message}` + (err.status ? ` (status ${err.status})` : "");
  } else {
    // The value an app reads, prototype chain included: req.body.constructor
    // is Object's, so "in" and not hasOwnProperty decides presence.
    const body = req.body;
    for (const n of spec.form || []) {
      if (body !== undefined && body !== null && req.body[n] !== undefined) values["post." + n] = report(req.body[n]);
      const p = req.param(n);
      if (p !== undefined) values["request." + n] = report(p);
    }
    for (const n of spec.query || []) {
      if (req.query[n] !== undefined) values["get." + n] = report(req.query[n]);
    }
    // express.json() parsed the body only when its type matched.
    if ((spec.json || []).length && req._body && typeis(req, ["application/json"])) {
      for (const p of spec.json) {
        const [ok, v] = pointer(req.body, p);
        if (ok) values["json." + p] = report(v);
      }
    }
  }
  res.json(out);
}

const app = express();
app.use(express.json());
app.use(express.urlencoded({ extended: true }));
app.use(multer().none());
// method-override's README configuration: the header, then _method from an
// urlencoded body (which it deletes).
app.use(methodOverride("X-HTTP-Method-Override"));
app.use(methodOverride(function (req) {
  if (req.body && typeof req.body === "object" && "_method" in req.body) {
    const method = req.body._method;
    delete req.body._method;
    return method;
  }
}));
app.all("*", (req, res) => echo(req, res, null));
// A body parser's refusal (its 400 or 413) is reported, not sent as a page.
app.use((err, req, res, next) => echo(req, res, err)); // eslint-disable-line no-unused-vars

app.listen(Number(process.argv[2]), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
