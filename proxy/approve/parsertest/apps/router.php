<?php
// parsertest echo app for PHP's built-in server (php -S ... router.php):
// reports what $_POST, $_GET, $_REQUEST, json_decode of the body and
// Symfony's Request::getMethod() give for the fields named in the
// X-Matrix-Fields header (base64 of {"form":[...],"query":[...],"json":[...]}).
// Every value travels as base64 of its text, so any byte survives.

function report($v)
{
    if (is_string($v)) {
        return ["kind" => "string", "b64" => base64_encode($v)];
    }
    if (is_int($v)) {
        $k = "number";
        $t = (string)$v;
    } elseif (is_float($v)) {
        $k = "number";
        $t = var_export($v, true); // 5.0 stays "5.0", as PHP prints a float
    } elseif (is_bool($v)) {
        $k = "bool";
        $t = $v ? "true" : "false";
    } elseif ($v === null) {
        $k = "null";
        $t = "null";
    } elseif (is_array($v)) {
        $k = array_is_list($v) ? "array" : "object";
        $t = json_encode($v, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION |
            JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR);
    } else {
        $k = gettype($v);
        $t = var_export($v, true);
    }
    return ["kind" => $k, "b64" => base64_encode($t)];
}

// pointer walks an RFC 6901 pointer the way PHP code indexes a decoded
// document: $doc['payee']['name'], with PHP's own key rules ("0" and 0 are
// one key).
function pointer($doc, $ptr)
{
    if ($ptr === "") {
        return [true, $doc];
    }
    if ($ptr[0] !== "/") {
        return [false, null];
    }
    $cur = $doc;
    foreach (explode("/", substr($ptr, 1)) as $tok) {
        $tok = str_replace(["~1", "~0"], ["/", "~"], $tok);
        if (!is_array($cur) || !array_key_exists($tok, $cur)) {
            return [false, null];
        }
        $cur = $cur[$tok];
    }
    return [true, $cur];
}

// symfonyMethod is Symfony 6.4's Request::getMethod() with
// enableHttpMethodParameterOverride() (Laravel turns it on): for a POST,
// the X-HTTP-Method-Override header, else _method from the body, else from
// the query; uppercased.
function symfonyMethod(&$err)
{
    $m = strtoupper($_SERVER["REQUEST_METHOD"]);
    if ($m !== "POST") {
        return $m;
    }
    $o = $_SERVER["HTTP_X_HTTP_METHOD_OVERRIDE"] ?? null;
    if (!$o) {
        $o = $_POST["_method"] ?? ($_GET["_method"] ?? "POST");
    }
    if (!is_string($o)) {
        return $m;
    }
    $o = strtoupper($o);
    if (in_array($o, ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "PATCH", "PURGE", "TRACE"], true)) {
        return $o;
    }
    if (!preg_match('/^[A-Z]++$/D', $o)) {
        $err = "SuspiciousOperationException: Invalid method override \"$o\".";
        return $m;
    }
    return $o;
}

// A warning PHP raised while it parsed the request (max_input_vars,
// max_input_nesting_level, post_max_size: it drops input and goes on).
$startup = error_get_last();
$spec = json_decode(base64_decode($_SERVER["HTTP_X_MATRIX_FIELDS"] ?? ""), true);
if (!is_array($spec)) {
    http_response_code(500);
    echo "router.php: no X-Matrix-Fields header";
    return true;
}
$err = "";
$out = ["method" => symfonyMethod($err), "values" => new stdClass()];
$vals = [];
foreach ($spec["form"] ?? [] as $n) {
    if (array_key_exists($n, $_POST)) {
        $vals["post." . $n] = report($_POST[$n]);
    }
    if (array_key_exists($n, $_REQUEST)) {
        $vals["request." . $n] = report($_REQUEST[$n]);
    }
}
// Laravel's $request->input(NAME): the input source (a JSON body's
// members when the type says JSON, else $_POST) + the query, the body's
// value winning (PHP's array union keeps the left side's keys).
function laravelInput() {
    $ct = $_SERVER["CONTENT_TYPE"] ?? "";
    if (stripos($ct, "/json") !== false || stripos($ct, "+json") !== false) {
        $d = json_decode(file_get_contents("php://input"), true);
        $src = is_array($d) ? $d : [];
    } else {
        $src = $_POST;
    }
    return $src + $_GET;
}
$input = laravelInput();
foreach ($spec["form"] ?? [] as $n) {
    if (array_key_exists($n, $input)) {
        $vals["input." . $n] = report($input[$n]);
    }
}
foreach ($spec["query"] ?? [] as $n) {
    if (array_key_exists($n, $_GET)) {
        $vals["get." . $n] = report($_GET[$n]);
    }
    if (array_key_exists($n, $input)) {
        $vals["input." . $n] = report($input[$n]);
    }
}
if (!empty($spec["json"])) {
    $doc = json_decode(file_get_contents("php://input"), true, 512, 0);
    if (json_last_error() !== JSON_ERROR_NONE) {
        $err = "json_decode: " . json_last_error_msg();
    } else {
        foreach ($spec["json"] as $p) {
            [$ok, $v] = pointer($doc, $p);
            if ($ok) {
                $vals["json." . $p] = report($v);
            }
        }
    }
}
if ($vals) {
    $out["values"] = $vals;
}
if ($err !== "") {
    $out["error"] = $err;
}
if ($startup !== null) {
    $out["warning"] = $startup["message"];
}
header("Content-Type: application/json");
echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
