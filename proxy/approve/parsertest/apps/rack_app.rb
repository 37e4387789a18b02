# parsertest echo app on Rack (Debian's ruby-rack 2.2) behind
# Rack::MethodOverride, served by WEBrick through Rack's own handler
# (Debian's ruby-webrick): reports req.POST, req.GET, req.params and
# JSON.parse of the body for the fields named in X-Matrix-Fields.
# Usage: ruby rack_app.rb PORT
require "base64"
require "json"
require "tempfile"
require "rack"
require "rack/handler/webrick"
require "webrick"

INDEX = /\A(0|[1-9][0-9]*)\z/

def report(v)
  kind, text =
    case v
    when String then ["string", v]
    when Integer, Float then ["number", v.to_s]
    when true, false then ["bool", v.to_s]
    when nil then ["null", "null"]
    when Array then ["array", compact(v)]
    when Hash then ["object", compact(v)]
    else [v.class.name, v.inspect]
    end
  { "kind" => kind, "b64" => Base64.strict_encode64(text.b) }
end

# compact is JSON text for arrays and hashes. Rack puts a file part in
# req.POST as a hash whose :tempfile is shown by its content.
def compact(v)
  JSON.generate(plain(v), allow_nan: true)
rescue StandardError
  v.inspect
end

def plain(v)
  case v
  when Hash then v.to_h { |k, x| [k.to_s, plain(x)] }
  when Array then v.map { |x| plain(x) }
  when IO, Tempfile then v.read.tap { v.rewind }
  else v
  end
end

# pointer walks an RFC 6901 pointer as Ruby code indexes a parsed document
# (doc["payee"]["name"], doc["items"][0]); [found, value].
def pointer(doc, ptr)
  return [true, doc] if ptr == ""
  return [false, nil] unless ptr.start_with?("/")
  cur = doc
  ptr[1..].split("/", -1).each do |tok|
    tok = tok.gsub("~1", "/").gsub("~0", "~")
    case cur
    when Hash
      return [false, nil] unless cur.key?(tok)
      cur = cur[tok]
    when Array
      return [false, nil] unless INDEX.match?(tok) && tok.to_i < cur.length
      cur = cur[tok.to_i]
    else
      return [false, nil]
    end
  end
  [true, cur]
end

echo = lambda do |env|
  spec = JSON.parse(Base64.decode64(env["HTTP_X_MATRIX_FIELDS"] || ""))
  req = Rack::Request.new(env)
  values = {}
  errors = []
  begin
    (spec["form"] || []).each do |n|
      post = req.POST
      values["post.#{n}"] = report(post[n]) if post.key?(n)
      params = req.params
      values["request.#{n}"] = report(params[n]) if params.key?(n)
    end
  rescue StandardError => e # InvalidParameterError, ParameterTypeError, EOFError, ...: Rack's 400
    errors << "POST: #{e.class}: #{e.message}"
  end
  begin
    (spec["query"] || []).each do |n|
      get = req.GET
      values["get.#{n}"] = report(get[n]) if get.key?(n)
    end
  rescue StandardError => e
    errors << "GET: #{e.class}: #{e.message}"
  end
  ptrs = spec["json"] || []
  unless ptrs.empty?
    input = env["rack.input"]
    input.rewind
    body = input.read
    input.rewind
    begin
      doc = JSON.parse(body)
      ptrs.each do |p|
        ok, v = pointer(doc, p)
        values["json.#{p}"] = report(v) if ok
      end
    rescue JSON::ParserError => e
      errors << "JSON.parse: #{e.class}: #{e.message}"
    end
  end
  out = { "method" => env["REQUEST_METHOD"], "values" => values }
  out["error"] = errors.join("; ") unless errors.empty?
  body = JSON.generate(out)
  [200, { "Content-Type" => "application/json", "Content-Length" => body.bytesize.to_s }, [body]]
end

Rack::Handler::WEBrick.run(
  Rack::MethodOverride.new(echo),
  Host: "127.0.0.1", Port: Integer(ARGV[0]),
  Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN), AccessLog: []
)
