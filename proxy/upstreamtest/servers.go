//go:build unix

package upstreamtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// python is Debian's interpreter, which has python3-hypercorn; a pyenv or
// virtualenv python on PATH would not.
const python = "/usr/bin/python3"

// startHypercorn serves the ASGI echo app. hypercorn accepts an h2c upgrade
// without HTTP2-Settings being named in Connection, which is what made the
// upgrade tunnel of issue 18 a bypass.
func startHypercorn(s *Server, port int) (*exec.Cmd, error) {
	cmd := exec.Command(python, "-m", "hypercorn", "--bind", "127.0.0.1:"+strconv.Itoa(port),
		"--workers", "1", "--keep-alive", "5", "echo_asgi:app")
	cmd.Env = append(cmd.Env, "PYTHONPATH="+s.Dir)
	return cmd, nil
}

// startHTTPServer serves a BaseHTTPRequestHandler echo (HTTP/1.1, keep-alive).
func startHTTPServer(s *Server, port int) (*exec.Cmd, error) {
	return exec.Command(python, filepath.Join(s.Dir, "echo_httpserver.py"), strconv.Itoa(port)), nil
}

// startApache runs httpd in the foreground (mpm_event) with every URL mapped
// to the CGI echo by mod_cgid.
func startApache(s *Server, port int) (*exec.Cmd, error) { return apache(s, port, false) }

// startApacheH2C is the same httpd with mod_http2 and "Protocols h2c
// http/1.1": a second server that switches to HTTP/2 on an h2c upgrade.
func startApacheH2C(s *Server, port int) (*exec.Cmd, error) { return apache(s, port, true) }

func apache(s *Server, port int, h2c bool) (*exec.Cmd, error) {
	const mods = "/usr/lib/apache2/modules"
	var user string
	if os.Geteuid() == 0 { // httpd refuses to run its children as root
		user = "User www-data\nGroup www-data\n"
	}
	conf := fmt.Sprintf(`ServerRoot %[1]q
ServerName 127.0.0.1
Listen 127.0.0.1:%[2]d
PidFile %[1]s/httpd.pid
DefaultRuntimeDir %[1]s
Mutex file:%[1]s default
ErrorLog %[1]s/error.log
LogLevel warn
LoadModule mpm_event_module %[3]s/mod_mpm_event.so
LoadModule authz_core_module %[3]s/mod_authz_core.so
LoadModule alias_module %[3]s/mod_alias.so
LoadModule env_module %[3]s/mod_env.so
LoadModule cgid_module %[3]s/mod_cgid.so
%[4]sStartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
KeepAliveTimeout 5
ScriptSock %[1]s/cgid.sock
DocumentRoot %[1]q
SetEnv UPSTREAMTEST_LOG %[1]s/requests.jsonl
ScriptAliasMatch "^/" "%[1]s/echo.cgi"
<Directory %[1]q>
	Require all granted
</Directory>
`, s.Dir, port, mods, user)
	if h2c {
		conf += fmt.Sprintf("LoadModule http2_module %s/mod_http2.so\nProtocols h2c http/1.1\n", mods)
	}
	p := filepath.Join(s.Dir, "httpd.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("write httpd.conf: %w", err)
	}
	return exec.Command("/usr/sbin/apache2", "-f", p, "-DFOREGROUND"), nil
}

// nginxHeaders are the request headers nginx's log format records: nginx
// cannot log "every header", so these are the ones the attacks are about.
var nginxHeaders = []string{
	"host", "x-stepgate-user", "x-stepgate-subject", "x-stepgate-acr", "x-stepgate-amr",
	"x-stepgate-id-token", "x-forwarded-user", "transfer-encoding", "content-length",
	"upgrade", "connection", "http2-settings",
}

// startNginx answers every request itself (return 200 with the echo line)
// and records it with a JSON access log.
func startNginx(s *Server, port int) (*exec.Cmd, error) {
	var user string
	if os.Geteuid() == 0 {
		user = "user nobody nogroup;\n"
	}
	var hdrs []string
	for _, h := range nginxHeaders {
		hdrs = append(hdrs, fmt.Sprintf(`"%s":"$http_%s"`, h, strings.ReplaceAll(h, "-", "_")))
	}
	conf := fmt.Sprintf(`%[3]sworker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
	log_format rec escape=json '{"server":"nginx","method":"$request_method","target":"$request_uri","proto":"$server_protocol","headers":{%[4]s},"body_len":"$content_length"}';
	access_log %[1]s/requests.jsonl rec;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	keepalive_timeout 5s;
	server {
		listen 127.0.0.1:%[2]d;
		location / {
			default_type text/plain;
			return 200 "echo $request_method $request_uri user=$http_x_stepgate_user\n";
		}
	}
}
`, s.Dir, port, user, strings.Join(hdrs, ","))
	p := filepath.Join(s.Dir, "nginx.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("write nginx.conf: %w", err)
	}
	return exec.Command("/usr/sbin/nginx", "-p", s.Dir, "-c", p, "-g", "daemon off;"), nil
}

// startPHP runs PHP's built-in server with the echo router (four workers, so
// parallel connections are not serialised).
func startPHP(s *Server, port int) (*exec.Cmd, error) {
	cmd := exec.Command("php", "-n", "-S", "127.0.0.1:"+strconv.Itoa(port), filepath.Join(s.Dir, "router.php"))
	cmd.Env = append(cmd.Env, "PHP_CLI_SERVER_WORKERS=4")
	return cmd, nil
}

// startNode serves the echo app on Node's http module.
func startNode(s *Server, port int) (*exec.Cmd, error) {
	return exec.Command("node", filepath.Join(s.Dir, "echo.js"), strconv.Itoa(port)), nil
}
