package config

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // substring of the error
	}{
		{"unknown top-level table", "[sever]\nsocket = \"/s\"\n", "cfg.toml:1: sever: unknown key"},
		{"unknown key", "[server]\nsocket = \"/s\"\nmax_con = 5\n", "cfg.toml:3: server.max_con: unknown key"},
		{"unknown nested key", "[audit]\nsink = \"stdout\"\n\n[log]\nlevel = \"info\"\ncolour = true\n", "cfg.toml:6: log.colour: unknown key"},
		{"wrong type", "[server]\nmax_conns = \"many\"\n", "cfg.toml:2: server.max_conns: incompatible types"},
		{"bad duration", "[server]\ntimeout = \"soon\"\n", "cfg.toml:2: server.timeout: want a duration"},
		{"decimal mode", "[server]\nmode = 660\n", "octal"},
		{"bad mode", "[server]\nmode = \"0999\"\n", "octal"},
		{"negative conns", "[server]\nmax_conns = -1\n", "cfg.toml:2: server.max_conns: must be positive"},
		{"bad sink", "[audit]\nsink = \"kafka\"\n", "cfg.toml:2: audit.sink: want"},
		{"file sink without path", "[audit]\nsink = \"file\"\n", "audit.path: the file sink needs a path"},
		{"bad on_failure", "[audit]\non_failure = \"ignore\"\n", "cfg.toml:2: audit.on_failure"},
		{"syntax", "[server\n", "to end table name"},
		{"unknown rlimit", "[sandbox.rlimits]\ncpu = 5\ncpux = 5\n", "cfg.toml:3: sandbox.rlimits.cpux: unknown resource"},
		{"unknown rlimit inline", "[sandbox]\nrlimits = { cpux = 5 }\n", "sandbox.rlimits.cpux: unknown resource"},
		{"unknown run user", "[server]\nmax_conns = 10\n\n[sandbox]\nuser = \"no-such-user-sw\"\n", "cfg.toml:5: sandbox.user: no such user \"no-such-user-sw\""},
		{"unknown run group", "[sandbox]\ngroup = \"no-such-group-sw\"\n", "cfg.toml:2: sandbox.group: no such group"},
		{"unknown socket owner", "[server]\nowner = \"no-such-user-sw\"\n", "cfg.toml:2: server.owner: no such user"},
		{"unknown socket group", "[server]\ngroup = \"no-such-group-sw\"\n", "cfg.toml:2: server.group: no such group"},
		{"relative socket", "[server]\nsocket = \"run/x.sock\"\n", "cfg.toml:2: server.socket: want an absolute path"},
		{"socket path too long", "[server]\nsocket = \"/" + strings.Repeat("x", 120) + "\"\n", "server.socket: want an absolute path of fewer than 108 bytes"},
		{"unknown syslog facility", "[audit]\nsyslog_facility = \"mail\"\n", "cfg.toml:2: audit.syslog_facility: want auth, authpriv"},
		{"unknown syslog format", "[audit]\nsyslog_format = \"json\"\n", "cfg.toml:2: audit.syslog_format: want"},
		{"syslog to an address", "[audit]\nsink = \"syslog\"\nsyslog_socket = \"127.0.0.1:514\"\n", "cfg.toml:3: audit.syslog_socket: want the absolute path"},
		{"bad cgroups mode", "[sandbox]\ncgroups = \"sometimes\"\n", "cfg.toml:2: sandbox.cgroups: want \"auto\", \"required\" or \"off\""},
		{"tiny audit records", "[audit]\nmax_record_bytes = 100\n", "audit.max_record_bytes: want at least 4096, got 100"},
		{"relative tmpdir parent", "[sandbox]\ntmpdir_parent = \"tmp\"\n", "sandbox.tmpdir_parent: want an absolute path"},
		{"bad dynamic uid range", "[sandbox]\ndynamic_uids = \"65519-61184\"\n", "sandbox.dynamic_uids: \"65519-61184\" is not a uid range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("cfg.toml", []byte(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	c, err := Parse("cfg.toml", []byte(`
[server]
socket = "/run/sw.sock"
mode = "0600"
timeout = "0s"
kill_timeout = 3
max_conns = 7

[sandbox]
user = "nobody"
group = "65534"
cgroups = false
rlimits = { core = 0, nofile = 64 }
env = { PATH = "/bin", LANG = "C.UTF-8" }

[audit]
sink = "file"
path = "/var/log/sw.jsonl"
fsync = "every"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Socket != "/run/sw.sock" || c.Server.Mode != 0o600 || c.Server.Timeout != 0 ||
		time.Duration(c.Server.KillTimeout) != 3*time.Second || c.Server.MaxConns != 7 {
		t.Errorf("server = %+v", c.Server)
	}
	if c.Server.Backlog != 100 {
		t.Errorf("unset key lost its default: backlog %d", c.Server.Backlog)
	}
	if c.Sandbox.Cgroups != CgroupsOff {
		t.Errorf("cgroups = false reads as %q, want off", c.Sandbox.Cgroups)
	}
	if c.Sandbox.User != "nobody" || c.Sandbox.Rlimits["nofile"] != 64 || c.Sandbox.Env["LANG"] != "C.UTF-8" || len(c.Sandbox.Env) != 2 {
		t.Errorf("sandbox = %+v", c.Sandbox)
	}
	if c.Audit.Sink != "file" || c.Audit.Fsync != "every" || c.Audit.OnFailure != "refuse" {
		t.Errorf("audit = %+v", c.Audit)
	}
}

// What Encode prints parses back to the same configuration.
func TestEncodeRoundTrip(t *testing.T) {
	c := Default()
	c.Server.Socket = "/s"
	c.Sandbox.Rlimits = map[string]uint64{"core": 0}
	var b bytes.Buffer
	if err := c.Encode(&b); err != nil {
		t.Fatal(err)
	}
	c2, err := Parse("encoded", b.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	var b2 bytes.Buffer
	c2.Encode(&b2)
	if b.String() != b2.String() {
		t.Errorf("round trip differs:\n%s\n---\n%s", b.String(), b2.String())
	}
}

func TestEmptyIsDefault(t *testing.T) {
	c, err := Parse("empty", nil)
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	c.Encode(&a)
	Default().Encode(&b)
	if a.String() != b.String() {
		t.Error("empty file differs from Default()")
	}
}

// The example configuration names every key and parses.
func TestExampleConfig(t *testing.T) {
	c, err := Load("../../examples/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Group != "www-data" || c.Audit.Sink != "file" || c.Sandbox.User != "nobody" {
		t.Errorf("unexpected values: %+v", c)
	}
	b, _ := os.ReadFile("../../examples/config.toml")
	var all bytes.Buffer
	Default().Encode(&all)
	for _, line := range strings.Split(all.String(), "\n") {
		key, _, ok := strings.Cut(strings.TrimSpace(line), " = ")
		if ok && !strings.Contains(string(b), "\n"+key+" = ") {
			t.Errorf("examples/config.toml does not document %q", key)
		}
	}
}
