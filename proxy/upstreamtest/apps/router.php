<?php
// Router script for PHP's built-in server (upstreamtest): every request
// comes here. Records it as one JSON line in $UPSTREAMTEST_LOG.
$h = [];
foreach (getallheaders() as $k => $v) {
    $k = strtolower($k);
    $h[$k] = isset($h[$k]) ? $h[$k] . ", " . $v : $v;
}
$body = file_get_contents("php://input");
$rec = [
    "server" => "php", "method" => $_SERVER["REQUEST_METHOD"], "target" => $_SERVER["REQUEST_URI"],
    "proto" => $_SERVER["SERVER_PROTOCOL"], "headers" => (object)$h, "body_len" => strlen($body),
];
file_put_contents(getenv("UPSTREAMTEST_LOG"),
    json_encode($rec, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE) . "\n", FILE_APPEND | LOCK_EX);
header("Content-Type: text/plain");
echo "echo " . $_SERVER["REQUEST_METHOD"] . " " . $_SERVER["REQUEST_URI"] . " user=" . ($h["x-stepgate-user"] ?? "") . "\n";
