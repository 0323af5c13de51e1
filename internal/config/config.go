// Package config reads sockwarden's TOML configuration file.
//
// Decoding is strict: a key the program does not know, or a value of the
// wrong type or out of range, is an error that names the key and its line,
// so a typo never silently leaves a default in force. Every field has a
// default; an empty file (or none) gives [Default].
package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/sandbox"
)

// Config is the whole configuration.
type Config struct {
	Server  Server  `toml:"server"`
	Policy  Policy  `toml:"policy"`
	Sandbox Sandbox `toml:"sandbox"`
	Audit   Audit   `toml:"audit"`
	Log     Log     `toml:"log"`
	Metrics Metrics `toml:"metrics"`
}

// Metrics configures the metrics and health endpoint.
type Metrics struct {
	// Listen is a loopback TCP address ("127.0.0.1:9464") or the path of
	// a UNIX socket to serve /metrics (Prometheus), /healthz and /readyz
	// on; "" = none.
	Listen string `toml:"listen"`
}

// Server configures the socket and the connection limits.
type Server struct {
	// Socket is the listening socket's path (the positional argument).
	Socket string `toml:"socket"`
	// Mode is the socket file's permission bits, in octal (-M).
	Mode Mode `toml:"mode"`
	// Owner and Group own the socket file: names or numeric ids.
	Owner string `toml:"owner"`
	Group string `toml:"group"`
	// Backlog is passed to listen(2) (-q).
	Backlog int `toml:"backlog"`
	// MaxConns is the number of connections served at once (-m).
	MaxConns int `toml:"max_conns"`
	// MaxConnsPerUID is the number of connections one caller uid may
	// hold at once: 0 means half of MaxConns, negative means no limit.
	MaxConnsPerUID int `toml:"max_conns_per_uid"`
	// RatePerUID is how many connections a second one caller uid may
	// open, with bursts of BurstPerUID (0: the rate); 0 means no rate
	// quota.
	RatePerUID  float64 `toml:"rate_per_uid"`
	BurstPerUID int     `toml:"burst_per_uid"`
	// QuotaInterval is how often the connections turned away over a
	// caller's quota are recorded, one record per caller with the count.
	QuotaInterval Duration `toml:"quota_interval"`
	// Timeout is the connection deadline; 0 means none (-t).
	Timeout Duration `toml:"timeout"`
	// KillTimeout is the time between SIGTERM and SIGKILL (-k).
	KillTimeout Duration `toml:"kill_timeout"`
	// Path is the PATH used to resolve a bare argv[0].
	Path string `toml:"path"`
	// MaxArgs, MaxArgBytes and MaxArgvBytes bound a request's argv.
	MaxArgs      int   `toml:"max_args"`
	MaxArgBytes  int64 `toml:"max_arg_bytes"`
	MaxArgvBytes int64 `toml:"max_argv_bytes"`
	// OutputBuffer bounds the output of one request that waits for a
	// client still sending its stdin (lua-resty-exec sends all of it
	// before it reads): 256 KiB in memory, the rest in an unlinked
	// temporary file. Past it the program is stopped.
	OutputBuffer int64 `toml:"output_buffer"`
}

// Policy configures the policy engine.
type Policy struct {
	// Paths are .rego files, data files, directories or bundles. Empty
	// means the embedded default policy.
	Paths []string `toml:"paths"`
	// Query is the decision's query.
	Query string `toml:"query"`
	// EvalTimeout bounds one evaluation; past it the request is denied.
	EvalTimeout Duration `toml:"eval_timeout"`
	// CacheSize is how many decisions are memoized when the policy is a
	// pure function of the request (argv, exe, peer, socket; see
	// policy.Engine.Cacheable): 0 means policy.DefaultCacheSize, a
	// negative number turns the cache off.
	CacheSize int `toml:"cache_size"`
	// Tests is what a policy's own *_test.rego files decide at load and
	// reload: "refuse" (a policy whose tests fail is not put in force),
	// "warn" (it is, with a warning) or "off" (they are not run).
	Tests string `toml:"tests"`
	// VerificationKey is the file of the key every policy bundle must be
	// signed with (PEM public key, or the secret for HS*); with it every
	// policy path must be a signed bundle. VerificationKeyID names the key
	// in the signatures ("default"), SigningAlg is its algorithm (RS256).
	VerificationKey   string `toml:"verification_key"`
	VerificationKeyID string `toml:"verification_key_id"`
	SigningAlg        string `toml:"signing_alg"`
	// OPAConfig is the file of OPA's agent configuration (YAML or JSON,
	// as opa run -c takes): services, keys and labels, with bundles (the
	// policy then comes from the control plane, and Paths must be
	// empty), decision_logs and status. See internal/controlplane.
	OPAConfig string `toml:"opa_config"`
}

// Sandbox holds the defaults for what a policy decision leaves out.
type Sandbox struct {
	// User and Group run the program when the decision names no run_as;
	// empty means the server's own identity.
	User  string `toml:"user"`
	Group string `toml:"group"`
	// AllowRoot permits running programs as uid 0.
	AllowRoot bool `toml:"allow_root"`
	// Env is the program's environment when the decision has none.
	Env map[string]string `toml:"env"`
	// Cwd is the program's working directory.
	Cwd string `toml:"cwd"`
	// Umask is the program's umask, in octal.
	Umask Mode `toml:"umask"`
	// Rlimits are resource limits by name (cpu, as, nofile, nproc, fsize,
	// core, stack, ...); the decision's rlimits override them one by one.
	Rlimits map[string]uint64 `toml:"rlimits"`
	// LandlockBestEffort runs a request whose Landlock rules the kernel
	// cannot fully enforce, with what it can (audited as such), instead of
	// denying it.
	LandlockBestEffort bool `toml:"landlock_best_effort"`
	// Cgroups says whether every request gets a cgroup v2 of its own, so
	// that a kill reaches every descendant, setsid or not: "auto" (when
	// this server may make them; otherwise process groups only, said at
	// start-up), "required" (refuse to start without) or "off". The
	// booleans of earlier versions mean "auto" and "off".
	Cgroups CgroupMode `toml:"cgroups"`
	// CgroupParent is where the request cgroups are created: a path under
	// the cgroup v2 mount, absolute ("/system.slice/x") or relative to the
	// server's own cgroup; empty means "<server's cgroup>/sockwarden".
	CgroupParent string `toml:"cgroup_parent"`
	// CgroupBestEffort runs a request whose cgroup limits this host cannot
	// enforce (controller not delegated) without them, audited as such,
	// instead of denying it.
	CgroupBestEffort bool `toml:"cgroup_best_effort"`
	// MaxOutputBytes caps stdout plus stderr; 0 means no cap.
	MaxOutputBytes int64 `toml:"max_output_bytes"`
	// MaxStdinBytes caps the stdin forwarded; 0 means no cap.
	MaxStdinBytes int64 `toml:"max_stdin_bytes"`
	// DynamicUIDs is the range "FIRST-LAST" of the uids that decisions
	// with run_as {"dynamic": true} take one each from (systemd's
	// DynamicUser range by default); "" turns them off. No user of
	// /etc/passwd may be in it.
	DynamicUIDs string `toml:"dynamic_uids"`
	// TmpDirParent is where the private temporary directories of
	// decisions with "tmpdir": true are made (a directory of the
	// server's, searchable by other users); "" turns them off.
	TmpDirParent string `toml:"tmpdir_parent"`
}

// CgroupMode is the [sandbox] cgroups setting.
type CgroupMode string

// The cgroup modes.
const (
	CgroupsAuto     CgroupMode = "auto"
	CgroupsRequired CgroupMode = "required"
	CgroupsOff      CgroupMode = "off"
)

// ParseCgroupMode parses "auto", "required" or "off" (and "true" and
// "false", as "auto" and "off").
func ParseCgroupMode(s string) (CgroupMode, error) {
	switch s {
	case "auto", "true":
		return CgroupsAuto, nil
	case "required":
		return CgroupsRequired, nil
	case "off", "false":
		return CgroupsOff, nil
	}
	return "", fmt.Errorf("want \"auto\", \"required\" or \"off\", got %q", s)
}

// UnmarshalTOML takes a mode name or a boolean.
func (m *CgroupMode) UnmarshalTOML(v any) error {
	var err error
	switch x := v.(type) {
	case bool:
		*m, err = ParseCgroupMode(strconv.FormatBool(x))
	case string:
		*m, err = ParseCgroupMode(x)
	default:
		err = fmt.Errorf("want \"auto\", \"required\" or \"off\", got %v", v)
	}
	return err
}

// Audit configures the audit trail.
type Audit struct {
	// Sink is "file", "stdout", "syslog" or "none".
	Sink string `toml:"sink"`
	// Path is the file of the "file" sink.
	Path string `toml:"path"`
	// Fsync is "none" or "every" (fsync after each record).
	Fsync string `toml:"fsync"`
	// OnFailure is "refuse" (no request runs unrecorded) or "continue".
	OnFailure string `toml:"on_failure"`
	// SyslogSocket is the local syslog socket of the "syslog" sink.
	SyslogSocket string `toml:"syslog_socket"`
	// SyslogFormat is "rfc5424" (rsyslog, syslog-ng) or "rfc3164" (the
	// format glibc's syslog() writes, for journald's /dev/log).
	SyslogFormat string `toml:"syslog_format"`
	// SyslogFacility is the facility of the records: auth, authpriv,
	// daemon, user, or local0 to local7.
	SyslogFacility string `toml:"syslog_facility"`
	// SyslogAddress, when set, sends the "syslog" sink's records to a
	// collector instead of SyslogSocket: "tcp://HOST:PORT" (RFC 6587
	// octet counting) or "tls://HOST:PORT" (RFC 5425), with SyslogCA the
	// PEM file of the CAs to trust ("" = the system's).
	SyslogAddress string `toml:"syslog_address"`
	SyslogCA      string `toml:"syslog_ca"`
	// MaxRecordBytes bounds every record: a request's argv (and the
	// policy's words) are cut to fit, with the whole argv's SHA-256 kept.
	MaxRecordBytes int `toml:"max_record_bytes"`
	// MaskPatterns are the patterns of argument keys ("--password=",
	// "Authorization:") whose values no record or log line shows,
	// whatever the policy says; [] turns them off.
	MaskPatterns []string `toml:"mask_patterns"`
	// Sinks are further sinks every record is also written to (a local
	// syslog daemon that forwards to a SIEM, say), each with its own
	// on_failure; the sink above stays the source of truth.
	Sinks []ExtraSink `toml:"sinks"`
	// SandboxDenials is "auto" (report each request's Landlock denials
	// when the kernel's audit is on), "on" (turn the kernel's audit on at
	// start-up if it is off) or "off".
	SandboxDenials string `toml:"sandbox_denials"`
}

// Log configures the operator log.
type Log struct {
	// Format is "auto" (text on a terminal, else JSON), "text" or "json".
	Format string `toml:"format"`
	// Level is "debug", "info", "warn" or "error".
	Level string `toml:"level"`
}

// Default returns the configuration in force with no file: sockexec's
// defaults for the server, the embedded policy, audit records on stdout.
func Default() *Config {
	return &Config{
		Server: Server{
			Mode:          0o660,
			Backlog:       100,
			MaxConns:      100,
			QuotaInterval: Duration(10 * time.Second),
			Timeout:       Duration(60 * time.Second),
			KillTimeout:   Duration(10 * time.Second),
			Path:          "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			MaxArgs:       4096,
			MaxArgBytes:   128 << 10,
			MaxArgvBytes:  1 << 20,
			OutputBuffer:  64 << 20,
		},
		Policy: Policy{
			Query: "data.sockwarden.decision",
			// Generous: the deadline is wall-clock time, which includes
			// waiting for a CPU on a loaded machine, and a timeout denies.
			EvalTimeout: Duration(time.Second),
			Tests:       "refuse",
		},
		Sandbox: Sandbox{
			Env:          map[string]string{"PATH": "/usr/local/bin:/usr/bin:/bin"},
			Cwd:          "/",
			Umask:        0o077,
			Cgroups:      CgroupsAuto,
			DynamicUIDs:  "61184-65519",
			TmpDirParent: sandbox.DefaultTmpDir,
			// No caps by default, as with sockexec: memory is bounded by
			// backpressure whatever the size; policies set caps per tool.
		},
		Audit: Audit{
			Sink:           "stdout",
			Fsync:          "none",
			OnFailure:      "refuse",
			SyslogSocket:   "/dev/log",
			SyslogFormat:   "rfc5424",
			SyslogFacility: "authpriv",
			MaxRecordBytes: audit.DefaultMaxRecordBytes,
			MaskPatterns:   audit.DefaultMaskPatterns(),
			SandboxDenials: "auto",
		},
		Log: Log{Format: "auto", Level: "info"},
	}
}

// Error is a configuration error at a key.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // dotted key
	Msg  string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", loc, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}

// Load reads the file at path over the defaults and validates the result.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes TOML text (named name in errors) over the defaults.
func Parse(name string, text []byte) (*Config, error) {
	c := Default()
	md, err := toml.NewDecoder(bytes.NewReader(text)).Decode(c)
	if err != nil {
		var pe toml.ParseError
		var ppe *toml.ParseError
		if errors.As(err, &ppe) {
			pe = *ppe
		}
		if ppe != nil || errors.As(err, &pe) {
			return nil, &Error{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
		}
		// Type mismatches come as text: toml: line N (last key "k"): msg.
		if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &Error{File: name, Line: line, Key: m[2], Msg: m[3]}
		}
		return nil, &Error{File: name, Msg: err.Error()}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		return nil, &Error{File: name, Line: keyLine(text, und[0]), Key: k, Msg: "unknown key"}
	}
	if err := c.Validate(); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = name
			ce.Line = keyLine(text, strings.Split(ce.Key, "."))
		}
		return nil, err
	}
	return c, nil
}

var typeErr = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]+)"\): (.*)$`)

// Validate checks values that TOML types alone do not constrain.
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	s := &c.Server
	switch {
	case s.Mode > 0o777:
		return bad("server.mode", "want permission bits such as \"0660\"")
	case s.Backlog <= 0:
		return bad("server.backlog", "must be positive, got %d", s.Backlog)
	case s.MaxConns <= 0:
		return bad("server.max_conns", "must be positive, got %d", s.MaxConns)
	case s.QuotaInterval <= 0:
		return bad("server.quota_interval", "must be positive")
	case s.RatePerUID < 0 || s.BurstPerUID < 0:
		return bad("server.rate_per_uid", "rate_per_uid and burst_per_uid must not be negative")
	case s.Timeout < 0:
		return bad("server.timeout", "must not be negative")
	case s.KillTimeout <= 0:
		return bad("server.kill_timeout", "must be positive")
	case s.MaxArgs <= 0 || s.MaxArgBytes <= 0 || s.MaxArgvBytes <= 0:
		return bad("server.max_args", "argv limits must be positive")
	case s.OutputBuffer <= 0:
		return bad("server.output_buffer", "must be positive, got %d", s.OutputBuffer)
	}
	if c.Policy.EvalTimeout <= 0 {
		return bad("policy.eval_timeout", "must be positive")
	}
	if err := audit.CheckMaskPatterns(c.Audit.MaskPatterns); err != nil {
		return bad("audit.mask_patterns", "%v", err)
	}
	if c.Audit.MaxRecordBytes < audit.MinMaxRecordBytes {
		return bad("audit.max_record_bytes", "want at least %d, got %d", audit.MinMaxRecordBytes, c.Audit.MaxRecordBytes)
	}
	if c.Sandbox.Umask > 0o777 {
		return bad("sandbox.umask", "want permission bits such as \"0077\"")
	}
	if p := c.Sandbox.TmpDirParent; p != "" && !filepath.IsAbs(p) {
		return bad("sandbox.tmpdir_parent", "want an absolute path, got %q", p)
	}
	if c.Sandbox.DynamicUIDs != "" {
		if _, err := sandbox.ParseUIDRange(c.Sandbox.DynamicUIDs); err != nil {
			return bad("sandbox.dynamic_uids", "%v", err)
		}
	}
	if s.Socket != "" && (!filepath.IsAbs(s.Socket) || len(s.Socket) >= maxSocketPath) {
		return bad("server.socket", "want an absolute path of fewer than %d bytes, got %q", maxSocketPath, s.Socket)
	}
	for _, k := range []struct{ key, name string }{{"server.owner", s.Owner}, {"sandbox.user", c.Sandbox.User}} {
		if err := userExists(k.name); err != nil {
			return bad(k.key, "%v", err)
		}
	}
	for _, k := range []struct{ key, name string }{{"server.group", s.Group}, {"sandbox.group", c.Sandbox.Group}} {
		if err := groupExists(k.name); err != nil {
			return bad(k.key, "%v", err)
		}
	}
	names := make([]string, 0, len(c.Sandbox.Rlimits))
	for name := range c.Sandbox.Rlimits {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !slices.Contains(sandbox.RlimitNames(), name) {
			return bad("sandbox.rlimits."+name, "unknown resource (known: %s)", strings.Join(sandbox.RlimitNames(), ", "))
		}
	}
	if c.Sandbox.MaxOutputBytes < 0 || c.Sandbox.MaxStdinBytes < 0 {
		return bad("sandbox.max_output_bytes", "caps must not be negative")
	}
	switch c.Audit.Sink {
	case "file":
		if c.Audit.Path == "" {
			return bad("audit.path", "the file sink needs a path")
		}
	case "stdout", "syslog", "none":
	default:
		return bad("audit.sink", "want \"file\", \"stdout\", \"syslog\" or \"none\", got %q", c.Audit.Sink)
	}
	if c.Audit.Sink == "syslog" && !filepath.IsAbs(c.Audit.SyslogSocket) {
		return bad("audit.syslog_socket", "want the absolute path of the local syslog socket (such as /dev/log), got %q", c.Audit.SyslogSocket)
	}
	if c.Audit.Fsync != "none" && c.Audit.Fsync != "every" {
		return bad("audit.fsync", "want \"none\" or \"every\", got %q", c.Audit.Fsync)
	}
	if c.Audit.OnFailure != "refuse" && c.Audit.OnFailure != "continue" {
		return bad("audit.on_failure", "want \"refuse\" or \"continue\", got %q", c.Audit.OnFailure)
	}
	switch c.Policy.Tests {
	case "refuse", "warn", "off":
	default:
		return bad("policy.tests", "want \"refuse\", \"warn\" or \"off\", got %q", c.Policy.Tests)
	}
	if l := c.Metrics.Listen; l != "" && !strings.HasPrefix(l, "/") {
		host, _, err := net.SplitHostPort(l)
		ip := net.ParseIP(host)
		if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return bad("metrics.listen", "want a loopback address such as 127.0.0.1:9464 or [::1]:9464, or the absolute path of a UNIX socket, got %q", l)
		}
	}
	if err := c.checkSinks(); err != nil {
		return err
	}
	if err := checkSyslogAddress("audit", c.Audit.SyslogAddress, c.Audit.SyslogCA); err != nil {
		return err
	}
	if c.Audit.SyslogFormat != "rfc5424" && c.Audit.SyslogFormat != "rfc3164" {
		return bad("audit.syslog_format", "want \"rfc5424\" or \"rfc3164\", got %q", c.Audit.SyslogFormat)
	}
	if _, ok := SyslogFacilities[c.Audit.SyslogFacility]; !ok {
		return bad("audit.syslog_facility", "want auth, authpriv, daemon, user or local0 to local7, got %q", c.Audit.SyslogFacility)
	}
	switch c.Audit.SandboxDenials {
	case "auto", "on", "off":
	default:
		return bad("audit.sandbox_denials", "want \"auto\", \"on\" or \"off\", got %q", c.Audit.SandboxDenials)
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		return bad("log.format", "want \"auto\", \"text\" or \"json\", got %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "want \"debug\", \"info\", \"warn\" or \"error\", got %q", c.Log.Level)
	}
	return nil
}

// maxSocketPath bounds a UNIX socket path (sun_path is 108 bytes).
const maxSocketPath = 108

// userExists checks a user name (a number needs no entry).
func userExists(name string) error {
	if name == "" {
		return nil
	}
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		return nil
	}
	if _, err := user.Lookup(name); err != nil {
		return fmt.Errorf("no such user %q", name)
	}
	return nil
}

// groupExists checks a group name (a number needs no entry).
func groupExists(name string) error {
	if name == "" {
		return nil
	}
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		return nil
	}
	if _, err := user.LookupGroup(name); err != nil {
		return fmt.Errorf("no such group %q", name)
	}
	return nil
}

// Encode writes c as TOML, the form "sockwarden config" prints.
func (c *Config) Encode(w *bytes.Buffer) error {
	return toml.NewEncoder(w).Encode(c)
}

// keyLine finds the line of a dotted key in TOML text: the line that sets
// its last part inside the table named by the rest. It returns 0 if the
// key cannot be found (for example when set by an inline table).
func keyLine(text []byte, key []string) int {
	if len(key) == 0 {
		return 0
	}
	table, leaf := strings.Join(key[:len(key)-1], "."), key[len(key)-1]
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			cur = strings.Trim(line, "[] \t")
			if i := strings.IndexByte(cur, '#'); i >= 0 {
				cur = strings.TrimSpace(strings.Trim(cur[:i], "[] \t"))
			}
			if cur == strings.Join(key, ".") {
				return n // the key is itself a table
			}
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.Trim(strings.TrimSpace(k), `"'`)
		full := k
		if cur != "" {
			full = cur + "." + k
		}
		if full == table+"."+leaf || (table == "" && k == leaf) {
			return n
		}
	}
	return 0
}

// Duration is a time.Duration written as a string ("30s", "1m") or as a
// number of seconds.
type Duration time.Duration

// UnmarshalTOML implements toml.Unmarshaler.
func (d *Duration) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		dur, err := time.ParseDuration(x)
		if err != nil {
			return fmt.Errorf("want a duration such as \"30s\": %w", err)
		}
		*d = Duration(dur)
	case int64:
		*d = Duration(time.Duration(x) * time.Second)
	case float64:
		*d = Duration(time.Duration(x * float64(time.Second)))
	default:
		return fmt.Errorf("want a duration such as \"30s\", got %T", v)
	}
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Mode is permission bits written as an octal string ("0660").
type Mode uint32

// UnmarshalTOML implements toml.Unmarshaler.
func (m *Mode) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("want an octal string such as \"0660\" (a TOML number would be read as decimal), got %T", v)
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("want octal permission bits such as \"0660\", got %q", s)
	}
	*m = Mode(n)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// String returns the duration in time.Duration's notation.
func (d Duration) String() string { return time.Duration(d).String() }

// String returns the bits in octal, as "0660".
func (m Mode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// SyslogFacilities are the syslog facilities [audit] syslog_facility
// takes, by name, with their numbers (RFC 5424).
var SyslogFacilities = map[string]int{
	"user": 1, "daemon": 3, "auth": 4, "authpriv": 10,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// ExtraSink is one of [audit] sinks ([[audit.sinks]]).
type ExtraSink struct {
	// Type is "file", "syslog" or "stdout".
	Type string `toml:"type"`
	// Path and Fsync are the "file" sink's, as [audit] path and fsync.
	Path  string `toml:"path"`
	Fsync string `toml:"fsync"`
	// The "syslog" sink's, as [audit] syslog_socket, syslog_format and
	// syslog_facility (the same defaults).
	SyslogSocket   string `toml:"syslog_socket"`
	SyslogFormat   string `toml:"syslog_format"`
	SyslogFacility string `toml:"syslog_facility"`
	SyslogAddress  string `toml:"syslog_address"`
	SyslogCA       string `toml:"syslog_ca"`
	// OnFailure is "continue" (the default: a failed write is logged, and
	// requests go on) or "refuse" (as [audit] on_failure = "refuse").
	OnFailure string `toml:"on_failure"`
}

// checkSinks fills in the defaults of c's extra sinks and checks them.
func (c *Config) checkSinks() error {
	for i := range c.Audit.Sinks {
		s := &c.Audit.Sinks[i]
		key := fmt.Sprintf("audit.sinks[%d]", i)
		if s.Fsync == "" {
			s.Fsync = "none"
		}
		if s.SyslogSocket == "" {
			s.SyslogSocket = "/dev/log"
		}
		if s.SyslogFormat == "" {
			s.SyslogFormat = "rfc5424"
		}
		if s.SyslogFacility == "" {
			s.SyslogFacility = "authpriv"
		}
		if s.OnFailure == "" {
			s.OnFailure = "continue"
		}
		switch {
		case s.Type != "file" && s.Type != "syslog" && s.Type != "stdout":
			return &Error{Key: key + ".type", Msg: fmt.Sprintf("want \"file\", \"syslog\" or \"stdout\", got %q", s.Type)}
		case s.Type == "file" && !filepath.IsAbs(s.Path):
			return &Error{Key: key + ".path", Msg: fmt.Sprintf("want the absolute path of the file, got %q", s.Path)}
		case s.Type == "syslog" && !filepath.IsAbs(s.SyslogSocket):
			return &Error{Key: key + ".syslog_socket", Msg: fmt.Sprintf("want the absolute path of the local syslog socket, got %q", s.SyslogSocket)}
		case s.SyslogFormat != "rfc5424" && s.SyslogFormat != "rfc3164":
			return &Error{Key: key + ".syslog_format", Msg: fmt.Sprintf("want \"rfc5424\" or \"rfc3164\", got %q", s.SyslogFormat)}
		case SyslogFacilities[s.SyslogFacility] == 0:
			return &Error{Key: key + ".syslog_facility", Msg: fmt.Sprintf("want auth, authpriv, daemon, user or local0 to local7, got %q", s.SyslogFacility)}
		case s.OnFailure != "continue" && s.OnFailure != "refuse":
			return &Error{Key: key + ".on_failure", Msg: fmt.Sprintf("want \"continue\" or \"refuse\", got %q", s.OnFailure)}
		case s.Fsync != "none" && s.Fsync != "every":
			return &Error{Key: key + ".fsync", Msg: fmt.Sprintf("want \"none\" or \"every\", got %q", s.Fsync)}
		}
		if err := checkSyslogAddress(key, s.SyslogAddress, s.SyslogCA); err != nil {
			return err
		}
	}
	return nil
}

// checkSyslogAddress checks the syslog_address and syslog_ca keys under
// key.
func checkSyslogAddress(key, addr, ca string) error {
	if addr == "" {
		if ca != "" {
			return &Error{Key: key + ".syslog_ca", Msg: "needs syslog_address = \"tls://HOST:PORT\""}
		}
		return nil
	}
	scheme, hostport, ok := strings.Cut(addr, "://")
	if _, _, err := net.SplitHostPort(hostport); !ok || err != nil || (scheme != "tcp" && scheme != "tls") {
		return &Error{Key: key + ".syslog_address", Msg: fmt.Sprintf("want tcp://HOST:PORT or tls://HOST:PORT, got %q", addr)}
	}
	if ca != "" && scheme != "tls" {
		return &Error{Key: key + ".syslog_ca", Msg: "only with a tls:// syslog_address"}
	}
	return nil
}
