package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/sys/unix"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sockwarden/sockwarden/audit"

	"github.com/sockwarden/sockwarden/internal/config"
	"github.com/sockwarden/sockwarden/internal/kaudit"
	"github.com/sockwarden/sockwarden/internal/systemd"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/policy"
	"github.com/sockwarden/sockwarden/sandbox"
	"github.com/sockwarden/sockwarden/server"
)

// serveFlags are the server's command-line settings. The flags that
// were given override the configuration file, which overrides the
// defaults.
type serveFlags struct {
	version     bool
	debug       bool
	configFile  string
	backlog     int
	mode        string
	maxConns    int
	timeout     float64
	killTimeout float64
	policy      stringList
	cgroups     string
	verifyKey   string
	opaConfig   string
	verifyKeyID string
	signingAlg  string
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// valueFlags are the single-letter flags that take a value; getopt lets
// sockexec users write them glued to their value ("-t0"), so we do too.
const valueFlags = "qMmtkcp"

// longFlags are the server's flags of more than one letter: "-cgroups"
// is that flag, not -c with "groups".
var longFlags = []string{"cgroups", "verification-key", "verification-key-id", "signing-alg", "opa-config"}

// longValueFlags are the long flags that take a value (the next argument
// unless written flag=value).
var longValueFlags = []string{"cgroups", "verification-key", "verification-key-id", "signing-alg", "opa-config"}

// parseServeArgs parses the server's command line and returns the
// effective configuration: defaults, then the -c file, then the flags
// given, then the positional socket path.
func parseServeArgs(name string, args []string, stderr io.Writer) (*config.Config, *serveFlags, error) {
	def := config.Default()
	o := &serveFlags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.version, "v", false, "print the version and exit")
	fs.BoolVar(&o.debug, "d", false, "log at debug level, and send each client a stderr line per sandbox denial of its program (where denials are reported)")
	fs.StringVar(&o.configFile, "c", "", "TOML configuration `file` (flags given override it)")
	fs.Var(&o.policy, "p", "policy `path`: a .rego file, a directory of .rego and data files, or a bundle .tar.gz (repeatable; none = the embedded default policy)")
	fs.IntVar(&o.backlog, "q", def.Server.Backlog, "listen(2) backlog: connections queued before accept")
	fs.StringVar(&o.mode, "M", fmt.Sprintf("%04o", uint32(def.Server.Mode)), "permission bits of the socket file, in octal")
	fs.IntVar(&o.maxConns, "m", def.Server.MaxConns, "connections served at once; extra ones are closed at once")
	fs.Float64Var(&o.timeout, "t", time.Duration(def.Server.Timeout).Seconds(), "seconds a connection may last before its program is killed (0 = no limit)")
	fs.StringVar(&o.cgroups, "cgroups", string(def.Sandbox.Cgroups), "a cgroup v2 per request: `auto` (when this server may make them, else process groups\nonly), required (refuse to start without) or off")
	fs.StringVar(&o.opaConfig, "opa-config", "", "`file` of OPA's agent configuration (YAML): policy bundles from a control plane, decision logs,\nstatus ([policy] opa_config)")
	fs.StringVar(&o.verifyKey, "verification-key", "", "`file` of the key every policy bundle must be signed with (PEM public key, or the secret\nfor HS*), as opa run's flag; every -p must then be a signed bundle")
	fs.StringVar(&o.verifyKeyID, "verification-key-id", "", "`name` of the verification key in the bundles' signatures (default \"default\")")
	fs.StringVar(&o.signingAlg, "signing-alg", "", "`algorithm` the bundles are signed with (default RS256)")
	fs.Float64Var(&o.killTimeout, "k", time.Duration(def.Server.KillTimeout).Seconds(), "seconds between SIGTERM and SIGKILL when a program is killed")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [-v] [-d] [-c config.toml] [-p policy]... [--verification-key file] [--opa-config file] [-q backlog] [-M mode] [-m max-conns] [-t secs] [-k secs] [--cgroups auto|required|off] [/path/to/socket]\n\n", name)
		if name == "sockwarden config" {
			fmt.Fprintf(stderr, "Prints the configuration a server started with the same flags would use\n")
			fmt.Fprintf(stderr, "(the defaults, then the -c file, then the flags given) as TOML, and checks it.\n")
			fmt.Fprintf(stderr, "Nothing is served. Other subcommands: sockwarden help.\n\nFlags:\n")
		} else {
			fmt.Fprintf(stderr, "Serves the sockexec protocol on the socket (or server.socket of the config).\n")
			fmt.Fprintf(stderr, "Every request is judged by the policy; with none configured, the embedded\n")
			fmt.Fprintf(stderr, "default policy admits only callers with the server's own uid and runs them\n")
			fmt.Fprintf(stderr, "sandboxed. Other subcommands: sockwarden help.\n\nFlags:\n")
		}
		fs.PrintDefaults()
	}
	if err := fs.Parse(splitGlued(args, valueFlags)); err != nil {
		return nil, nil, err
	}
	if o.version {
		return nil, o, nil
	}
	cfg := def
	if o.configFile != "" {
		var err error
		if cfg, err = config.Load(o.configFile); err != nil {
			return nil, nil, err
		}
	}
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "d":
			cfg.Log.Level = "debug"
		case "q":
			cfg.Server.Backlog = o.backlog
		case "M":
			m, err := strconv.ParseUint(o.mode, 8, 32)
			if err != nil || m > 0o777 {
				ferr = fmt.Errorf("-M %q: want octal permission bits such as 0660", o.mode)
			}
			cfg.Server.Mode = config.Mode(m)
		case "m":
			cfg.Server.MaxConns = o.maxConns
		case "t":
			if o.timeout < 0 {
				ferr = errors.New("-t must be >= 0")
			}
			cfg.Server.Timeout = config.Duration(seconds(o.timeout))
		case "p":
			cfg.Policy.Paths = o.policy
		case "opa-config":
			cfg.Policy.OPAConfig = o.opaConfig
		case "verification-key":
			cfg.Policy.VerificationKey = o.verifyKey
		case "verification-key-id":
			cfg.Policy.VerificationKeyID = o.verifyKeyID
		case "signing-alg":
			cfg.Policy.SigningAlg = o.signingAlg
		case "cgroups":
			m, err := config.ParseCgroupMode(o.cgroups)
			if err != nil {
				ferr = fmt.Errorf("--cgroups: %w", err)
			}
			cfg.Sandbox.Cgroups = m
		case "k":
			if o.killTimeout <= 0 {
				ferr = errors.New("-k must be > 0")
			}
			cfg.Server.KillTimeout = config.Duration(seconds(o.killTimeout))
		}
	})
	if ferr != nil {
		return nil, nil, ferr
	}
	switch fs.NArg() {
	case 0:
	case 1:
		cfg.Server.Socket = fs.Arg(0)
	default:
		fs.Usage()
		return nil, nil, fmt.Errorf("one socket path expected, got %q", fs.Args())
	}
	if cfg.Server.Socket == "" && name == "sockwarden" && os.Getenv("LISTEN_FDS") == "" {
		fs.Usage()
		return nil, nil, errors.New("missing socket path: give it as the last argument or set server.socket in the config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("after applying flags: %w", err)
	}
	return cfg, o, nil
}

// splitGlued turns getopt's glued forms into separate arguments:
// "-t0" -> "-t", "0" for the flags in takes, and "-vd" -> "-v", "-d".
// It stops at the first positional argument or "--".
func splitGlued(args []string, takes string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--" || a == "-" || !strings.HasPrefix(a, "-"):
			return append(out, args[i:]...)
		case strings.HasPrefix(a, "--") || strings.Contains(a, "=") || slices.Contains(longFlags, a[1:]):
			out = append(out, a)
			if !strings.Contains(a, "=") && slices.Contains(longValueFlags, strings.TrimLeft(a, "-")) && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			continue
		}
		for j := 1; j < len(a); j++ {
			out = append(out, "-"+a[j:j+1])
			if strings.IndexByte(takes, a[j]) < 0 {
				continue
			}
			if j+1 < len(a) {
				out = append(out, a[j+1:])
			} else if i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			break
		}
	}
	return out
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// newLogger returns the operator logger: colored text on a terminal,
// JSON otherwise, unless format forces one. Its level can change later
// through the returned LevelVar (SIGHUP).
func newLogger(w io.Writer, c config.Log) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	setLevel(level, c.Level)
	text := c.Format == "text"
	if f, ok := w.(*os.File); ok && c.Format == "auto" {
		text = isTerminal(f)
	}
	if text {
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly, NoColor: !isTTY(w)})), level
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), level
}

func setLevel(v *slog.LevelVar, name string) {
	var l slog.Level
	l.UnmarshalText([]byte(name)) // validated by config
	v.Set(l)
}

func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// serve runs the server until SIGTERM or SIGINT and returns the exit
// status.
func serve(args []string, stdout, stderr io.Writer) int {
	cfg, o, err := parseServeArgs("sockwarden", args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden: %v\n", err)
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, versionString())
		return 0
	}
	log, level := newLogger(stderr, cfg.Log)
	slog.SetDefault(log)
	sc := &cfg.Server
	procs := setProcs()

	trail, err := openAudit(cfg.Audit, stdout)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if trail != nil {
		defer trail.Close()
	}

	denials := watchDenials(cfg.Audit.SandboxDenials, log)
	if denials != nil {
		// After the server and the spawner: reports still open end then.
		defer denials.Close()
	}
	so := spawnerOptions(cfg)
	so.Denials = denials
	spawner, err := sandbox.New(so)
	if err != nil {
		log.Error("cannot start: cgroups", "err", err)
		return 1
	}
	// At shutdown, after every child was waited for: the empty request
	// cgroups kept for reuse.
	defer spawner.Close()
	if err := spawner.CompileFilters(); err != nil {
		log.Error("cannot start: seccomp", "err", err)
		return 1
	}
	caps := spawner.Capabilities()
	if denials != nil {
		if caps.Denials {
			log.Info("sandbox denials: reported in each request's audit trail", "audit.sandbox_denials", cfg.Audit.SandboxDenials)
		} else {
			log.Info("sandbox denials: not reported: they need Landlock ABI 7", "landlock_abi", caps.LandlockABI)
		}
	}
	cg := caps.Cgroups
	if !cg.Available && cfg.Sandbox.Cgroups == config.CgroupsRequired {
		log.Error("cannot start: cgroups are required (sandbox.cgroups = \"required\") and this server has none", "reason", cg.Reason)
		return 1
	}
	var (
		reg  *prometheus.Registry
		sm   *server.Metrics
		pm   *policyMetrics
		mreg prometheus.Registerer
	)
	if cfg.Metrics.Listen != "" {
		reg = newRegistry()
		sm, pm, mreg = server.NewMetrics(reg), newPolicyMetrics(reg), reg
	}
	gate := server.NewPolicyGate(nil)
	agent, err := newAgent(cfg, gate, trail, pm, mreg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	var engine *policy.Engine
	if len(agent.Bundles()) == 0 {
		if engine, err = loadPolicy(cfg); err != nil {
			log.Error("cannot start: policy", "err", err)
			return 1
		}
		logPolicyTests(log, engine, cfg.Policy.Tests)
		gate.Swap(engine)
		pm.loaded(engine, false)
	}

	lim := serverLimits(cfg)
	srv, err := server.New(server.Config{
		Socket:         sc.Socket,
		MaxConns:       lim.MaxConns,
		MaxConnsPerUID: lim.MaxConnsPerUID,
		MaskPatterns:   append([]string{}, cfg.Audit.MaskPatterns...),
		RatePerUID:     max(0, lim.RatePerUID),
		BurstPerUID:    lim.BurstPerUID,
		QuotaInterval:  time.Duration(sc.QuotaInterval),
		Deadline:       lim.Deadline,
		KillTimeout:    lim.KillTimeout,
		Path:           lim.Path,
		MaxArgs:        lim.MaxArgs,
		MaxArgBytes:    lim.MaxArgBytes,
		MaxArgvBytes:   lim.MaxArgvBytes,
		OutputBuffer:   sc.OutputBuffer,
		Logger:         log,
		Authorizer:     gate,
		Defaults:       sandboxDefaults(cfg),
		Spawner:        spawner,
		Audit:          trail,
		// on_failure = "continue": run requests even when unrecorded.
		AuditBestEffort:   cfg.Audit.OnFailure == "continue",
		DecisionLog:       agent.decisionLog(),
		ExplainDenials:    o.debug,
		Metrics:           sm,
		MetricsRegisterer: mreg,
	})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	uid, gid, err := lookupOwner(sc.Owner, sc.Group)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}

	// Signals are caught before the socket exists, so none is lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)

	// A socket passed by systemd (socket activation) is systemd's: it is
	// neither created nor removed here.
	l, err := systemd.UnixListener()
	activated := l != nil
	if err == nil && !activated {
		l, err = server.Listen(server.ListenConfig{Path: sc.Socket, Mode: os.FileMode(sc.Mode), UID: uid, GID: gid, Backlog: sc.Backlog})
	}
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	var created os.FileInfo
	if activated {
		sc.Socket = l.Addr().String()
	} else if created, err = os.Lstat(sc.Socket); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	log.Info("serving", "socket_activation", activated, "version", versionString(), "socket", sc.Socket, "mode", fmt.Sprintf("%04o", uint32(sc.Mode)),
		"max_conns", sc.MaxConns, "backlog", sc.Backlog, "timeout", sc.Timeout.String(), "kill_timeout", sc.KillTimeout.String(),
		"policy", engine.Source(), "policy_revision", engine.Revision(), "landlock_abi", caps.LandlockABI,
		"audit", cfg.Audit.Sink, "gomaxprocs", procs)
	// One line says what this host gives this server.
	host := plan.ThisProcess(caps, nil)
	if host.Degraded() {
		log.Warn("containment: "+host.String(), "cgroups", cg.Available, "switch_users", caps.SetID, "landlock_abi", caps.LandlockABI)
	} else {
		log.Info("containment: "+host.String(), "cgroups", cg.Available, "switch_users", caps.SetID, "landlock_abi", caps.LandlockABI)
	}
	if len(cfg.Policy.Paths) == 0 && engine != nil {
		log.Info("no policy configured: the embedded default policy admits only callers with the server's uid, sandboxed (see sockwarden check)")
	}
	if engine != nil {
		logCacheable(log, engine)
	}

	if trail != nil {
		ev := serverEvent(sc.Socket, caps.LandlockABI, "sockwarden started")
		ev.Details = map[string]any{
			"policy":          engine.Source(),
			"policy_revision": engine.Revision(),
			"containment":     host.String(),
			"max_connections": sc.MaxConns,
		}
		if err := trail.ServerStart(ev); err != nil && cfg.Audit.OnFailure != "continue" {
			log.Error("cannot start: the audit log cannot be written", "err", err)
			return 1
		}
	}
	var ep *metricsEndpoint
	if reg != nil {
		if ep, err = startMetrics(cfg.Metrics.Listen, reg, srv, gate, log); err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
		defer ep.stop()
	}
	if err := agent.start(); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	if ep != nil {
		ep.ready.Store(true)
	}
	notify(log, "READY=1")

	status := 0
loop:
	for {
		select {
		case err := <-served:
			log.Error("server stopped", "err", err)
			status = 1
			break loop
		case sig := <-sigs:
			switch sig {
			case syscall.SIGUSR1:
				dumpState(log, srv)
				continue
			case syscall.SIGHUP:
				notify(log, "RELOADING=1")
				if next, err := reloadConfig(log, args, cfg); err != nil {
					log.Error("configuration reload failed; keeping the running configuration", "err", err)
				} else {
					cfg = next
					setLevel(level, cfg.Log.Level)
					srv.SetLimits(serverLimits(cfg))
					srv.SetDefaults(sandboxDefaults(cfg))
				}
				if len(agent.Bundles()) > 0 {
					log.Info("policy not reloaded: it comes from the control plane's bundles (opa_config), polled as configured", "bundles", agent.Bundles())
				} else {
					reloadPolicy(log, cfg, gate, trail, pm)
				}
				if trail != nil {
					if err := trail.Reopen(); err != nil {
						log.Error("reopening the audit log", "err", err)
					} else {
						log.Info("audit log reopened")
					}
				}
				notify(log, "READY=1")
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break loop
		}
	}
	notify(log, "STOPPING=1")
	if ep != nil {
		ep.ready.Store(false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), srv.Limits().KillTimeout+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Error("shutdown incomplete", "err", err)
		status = 1
	}
	agent.stop()
	// Remove the socket only if it is still ours.
	if cur, err := os.Lstat(sc.Socket); created != nil && err == nil && os.SameFile(cur, created) {
		os.Remove(sc.Socket)
	}
	if trail != nil {
		if err := trail.ServerStop(serverEvent(sc.Socket, caps.LandlockABI, "sockwarden stopped")); err != nil {
			log.Error("audit", "err", err)
		}
		trail.Sync()
	}
	log.Info("stopped", "served", srv.Stats().Served)
	return status
}

// reloadConfig reads the configuration again (the -c file under the same
// flags) for SIGHUP and says, key by key, what changed: the keys a running
// server applies (see liveKey) are returned in next for the caller to put
// in force; each other changed key is logged as needing a restart, and
// keeps its running value in next.
func reloadConfig(log *slog.Logger, args []string, cur *config.Config) (next *config.Config, err error) {
	next, _, err = parseServeArgs("sockwarden", args, io.Discard)
	if err != nil {
		return nil, err
	}
	var applied []string
	for _, key := range changedKeys(reflect.ValueOf(cur).Elem(), reflect.ValueOf(next).Elem(), "") {
		if liveKey(key) {
			applied = append(applied, key)
			continue
		}
		log.Warn("configuration changed where a reload cannot apply it; restart to apply", "key", key)
		keepKey(reflect.ValueOf(next).Elem(), reflect.ValueOf(cur).Elem(), key)
	}
	log.Info("configuration reloaded", "applied", applied, "policy_paths", next.Policy.Paths, "log_level", next.Log.Level)
	return next, nil
}

// liveKey reports whether a running server applies a change of key on
// SIGHUP: the connection limits and deadlines (for the connections
// accepted from then on), the policy, the sandbox defaults (for the
// requests judged from then on) and the log level. The socket, the
// audit sink, the log format, the cgroup set-up and the dynamic uid
// range need a restart.
func liveKey(key string) bool {
	switch key {
	case "server.timeout", "server.kill_timeout", "server.max_conns", "server.max_conns_per_uid", "server.rate_per_uid", "server.burst_per_uid", "server.path",
		"server.max_args", "server.max_arg_bytes", "server.max_argv_bytes", "log.level":
		return true
	case "sandbox.cgroups", "sandbox.cgroup_parent", "sandbox.dynamic_uids", "sandbox.tmpdir_parent":
		return false
	}
	return strings.HasPrefix(key, "policy.") || strings.HasPrefix(key, "sandbox.")
}

// changedKeys lists the dotted TOML keys whose values differ between a
// and b (structs of the same type); a map or a list is one key.
func changedKeys(a, b reflect.Value, prefix string) []string {
	var out []string
	t := a.Type()
	for i := range t.NumField() {
		key := prefix + t.Field(i).Tag.Get("toml")
		fa, fb := a.Field(i), b.Field(i)
		if fa.Kind() == reflect.Struct {
			out = append(out, changedKeys(fa, fb, key+".")...)
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			out = append(out, key)
		}
	}
	return out
}

// keepKey copies the value of the dotted key from src to dst.
func keepKey(dst, src reflect.Value, key string) {
	head, rest, nested := strings.Cut(key, ".")
	t := dst.Type()
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("toml") != head {
			continue
		}
		if nested {
			keepKey(dst.Field(i), src.Field(i), rest)
		} else {
			dst.Field(i).Set(src.Field(i))
		}
		return
	}
}

// serverLimits are the configuration's server.Limits.
func serverLimits(c *config.Config) server.Limits {
	deadline := time.Duration(c.Server.Timeout)
	if deadline == 0 {
		deadline = -1
	}
	perUID := c.Server.MaxConnsPerUID
	if perUID == 0 {
		perUID = max(1, c.Server.MaxConns/2) // explicit, so that a reload back to the default applies
	}
	rateQuota := c.Server.RatePerUID
	if rateQuota == 0 {
		rateQuota = -1 // explicit "none", so that a reload turning it off applies
	}
	burst := c.Server.BurstPerUID
	if burst == 0 {
		burst = max(1, int(rateQuota))
	}
	return server.Limits{
		MaxConns: c.Server.MaxConns, MaxConnsPerUID: perUID, RatePerUID: rateQuota, BurstPerUID: burst, Deadline: deadline, KillTimeout: time.Duration(c.Server.KillTimeout),
		Path: c.Server.Path, MaxArgs: c.Server.MaxArgs, MaxArgBytes: c.Server.MaxArgBytes, MaxArgvBytes: c.Server.MaxArgvBytes,
	}
}

// policyOptions are the engine's options the configuration gives, for
// local paths and control-plane bundles alike.
func policyOptions(cfg *config.Config) policy.Options {
	c := cfg.Policy
	return policy.Options{Paths: c.Paths, Query: c.Query, Timeout: time.Duration(c.EvalTimeout), CacheSize: c.CacheSize, Tests: c.Tests}
}

// loadPolicy loads the configured policy, or the embedded default.
func loadPolicy(cfg *config.Config) (*policy.Engine, error) {
	c := cfg.Policy
	if len(c.Paths) == 0 {
		e, err := policy.Default(cfg.Sandbox.DynamicUIDs != "")
		if err != nil {
			return nil, err
		}
		return e.WithTimeout(time.Duration(c.EvalTimeout)).WithCacheSize(c.CacheSize), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := policyOptions(cfg)
	if c.VerificationKey != "" {
		o.Verification = &policy.Verification{KeyFile: c.VerificationKey, KeyID: c.VerificationKeyID, Alg: c.SigningAlg}
	}
	return policy.Load(ctx, o)
}

// logPolicyTests says how the policy's own tests went when it loaded.
func logPolicyTests(log *slog.Logger, e *policy.Engine, mode string) {
	s := e.Tests()
	switch {
	case mode == policy.TestsOff:
		log.Info("policy tests: not run (policy.tests = \"off\")")
	case s.Files == 0:
		log.Info("policy tests: the policy has none (*_test.rego files next to it run at every load)")
	case s.Failed:
		log.Warn("policy tests fail; the policy is in force anyway (policy.tests = \"warn\")", "files", s.Files, "report", s.Report)
	default:
		summary := s.Report
		if i := strings.LastIndexByte(summary, '\n'); i >= 0 {
			summary = summary[i+1:]
		}
		log.Info("policy tests pass", "files", s.Files, "summary", summary)
	}
}

// logCacheable says whether e's decisions are memoized, and why not.
func logCacheable(log *slog.Logger, e *policy.Engine) {
	if ok, why := e.Cacheable(); ok {
		log.Info("policy decisions are cached: the policy is a pure function of argv, exe, peer and socket")
	} else {
		log.Info("policy decisions are not cached", "why", why)
	}
}

// reloadPolicy loads the policy again and puts it in force only if it
// loads (compiles, and passes the smoke evaluation); otherwise the policy
// in force keeps serving. Either way the outcome is logged and audited.
func reloadPolicy(log *slog.Logger, cfg *config.Config, gate *server.PolicyGate, trail *audit.Logger, pm *policyMetrics) {
	e, err := loadPolicy(cfg)
	rec := audit.PolicyReload{}
	if err != nil {
		cur := gate.Engine()
		log.Error("policy reload failed; the previous policy keeps serving", "err", err, "revision", cur.Revision())
		pm.reloadFailed()
		rec.Revision, rec.Source, rec.Error = cur.Revision(), cur.Source(), err.Error()
	} else {
		gate.Swap(e)
		pm.loaded(e, true)
		log.Info("policy reloaded", "source", e.Source(), "revision", e.Revision())
		logPolicyTests(log, e, cfg.Policy.Tests)
		logCacheable(log, e)
		rec.Revision, rec.Source = e.Revision(), e.Source()
	}
	if trail != nil {
		if err := trail.PolicyReload(rec); err != nil {
			log.Error("audit", "err", err)
		}
	}
}

// watchDenials sets up the reporting of sandbox denials as [audit]
// sandbox_denials says (mode): it returns the watcher, or nil and says
// once why there is none.
func watchDenials(mode string, log *slog.Logger) *sandbox.DenialWatcher {
	const key = "audit.sandbox_denials"
	if mode == "off" {
		log.Info("sandbox denials: not reported", key, mode)
		return nil
	}
	st, err := kaudit.GetStatus()
	if err != nil {
		log.Info("sandbox denials: not reported: the kernel's audit status cannot be read (needs root: CAP_AUDIT_CONTROL and CAP_AUDIT_READ)", key, mode, "err", err)
		return nil
	}
	if st.Enabled == 0 {
		if mode != "on" {
			log.Info("sandbox denials: not reported: the kernel's audit is off (auditd or auditctl -e 1 turns it on; so does audit.sandbox_denials = \"on\")", key, mode)
			return nil
		}
		if err := kaudit.SetEnabled(true); err != nil {
			log.Warn("sandbox denials: not reported: cannot turn the kernel's audit on", key, mode, "err", err)
			return nil
		}
		log.Warn("sandbox denials: turned the kernel's audit on, for the whole host; it stays on after sockwarden stops (auditctl -e 0 turns it off)", key, mode)
	}
	w, err := sandbox.WatchDenials()
	if err != nil {
		log.Warn("sandbox denials: not reported", key, mode, "err", err)
		return nil
	}
	if st.PID == 0 {
		log.Debug("sandbox denials: no audit daemon: the kernel also writes each record to its own log (dmesg), rate-limited")
	}
	return w
}

// spawnerOptions are the configuration's sandbox.Options.
func spawnerOptions(c *config.Config) sandbox.Options {
	o := sandbox.Options{Cgroups: sandbox.CgroupOptions{Disabled: c.Sandbox.Cgroups == config.CgroupsOff, Parent: c.Sandbox.CgroupParent}}
	o.DynamicUIDs, _ = sandbox.ParseUIDRange(c.Sandbox.DynamicUIDs) // checked when read; "" = none
	o.TmpDir = c.Sandbox.TmpDirParent
	if o.TmpDir == "" {
		o.TmpDir = "-"
	}
	return o
}

// sandboxDefaults are the configuration's answers to what a decision
// leaves out.
func sandboxDefaults(c *config.Config) plan.Defaults {
	umask := uint32(c.Sandbox.Umask)
	return plan.Defaults{
		User:               c.Sandbox.User,
		Group:              c.Sandbox.Group,
		AllowRoot:          c.Sandbox.AllowRoot,
		Env:                c.Sandbox.Env,
		Cwd:                c.Sandbox.Cwd,
		Umask:              &umask,
		Rlimits:            c.Sandbox.Rlimits,
		LandlockBestEffort: c.Sandbox.LandlockBestEffort,
		CgroupBestEffort:   c.Sandbox.CgroupBestEffort,
		KillTimeout:        time.Duration(c.Server.KillTimeout),
		MaxOutputBytes:     c.Sandbox.MaxOutputBytes,
		MaxStdinBytes:      c.Sandbox.MaxStdinBytes,
	}
}

// openAudit opens the configured audit sink; nil for "none".
func openAudit(c config.Audit, stdout io.Writer) (*audit.Logger, error) {
	if c.Sink == "none" {
		return nil, nil
	}
	sink, name, err := openSink(config.ExtraSink{Type: c.Sink, Path: c.Path, Fsync: c.Fsync,
		SyslogSocket: c.SyslogSocket, SyslogFormat: c.SyslogFormat, SyslogFacility: c.SyslogFacility,
		SyslogAddress: c.SyslogAddress, SyslogCA: c.SyslogCA}, stdout)
	if err != nil {
		return nil, err
	}
	if len(c.Sinks) > 0 {
		// The sink above is the source of truth; the others get copies,
		// each with its own on_failure.
		members := []audit.TeeMember{{Name: name, Sink: sink, Required: true}}
		for _, x := range c.Sinks {
			s, name, err := openSink(x, stdout)
			if err != nil {
				for _, m := range members {
					m.Sink.Close()
				}
				return nil, err
			}
			members = append(members, audit.TeeMember{Name: name, Sink: s, Required: x.OnFailure == "refuse"})
		}
		tee := audit.NewTeeSink(members...)
		tee.OnError = func(name string, err error) {
			slog.Warn("audit sink failing; the record is in the other sinks (on_failure = \"continue\")", "sink", name, "err", err)
		}
		sink = tee
	}
	return audit.New(sink, audit.Options{
		MaxRecordBytes: c.MaxRecordBytes,
		OnHealthChange: func(err error) {
			if err != nil && c.OnFailure == "continue" {
				slog.Error("audit log failing; requests still run (on_failure = continue)", "err", err)
			} else if err != nil {
				slog.Error("audit log failing; refusing requests until it works again", "err", err)
			} else {
				slog.Info("audit log writable again")
			}
		},
	}), nil
}

// openSink opens one audit sink, and returns it with a name for logs.
func openSink(c config.ExtraSink, stdout io.Writer) (audit.Sink, string, error) {
	switch c.Type {
	case "stdout":
		return audit.NewWriterSink(stdout), "stdout", nil
	case "file":
		sync, err := audit.ParseSyncPolicy(c.Fsync)
		if err != nil {
			return nil, "", fmt.Errorf("audit.fsync: %w", err)
		}
		f, err := audit.OpenFile(c.Path, audit.FileOptions{Sync: sync})
		if err != nil {
			return nil, "", fmt.Errorf("audit: %w", err)
		}
		return f, "file " + c.Path, nil
	case "syslog":
		so := audit.SyslogOptions{Path: c.SyslogSocket, Facility: config.SyslogFacilities[c.SyslogFacility], RFC3164: c.SyslogFormat == "rfc3164"}
		if c.SyslogAddress != "" {
			scheme, addr, _ := strings.Cut(c.SyslogAddress, "://")
			no := audit.SyslogNetOptions{SyslogOptions: so, Address: addr}
			if scheme == "tls" {
				host, _, _ := net.SplitHostPort(addr)
				no.TLS = &tls.Config{ServerName: host}
				if c.SyslogCA != "" {
					pem, err := os.ReadFile(c.SyslogCA)
					if err != nil {
						return nil, "", fmt.Errorf("audit.syslog_ca: %w", err)
					}
					pool := x509.NewCertPool()
					if !pool.AppendCertsFromPEM(pem) {
						return nil, "", fmt.Errorf("audit.syslog_ca: no certificate in %s", c.SyslogCA)
					}
					no.TLS.RootCAs = pool
				}
			}
			s, err := audit.DialSyslogNet(no)
			if err != nil {
				return nil, "", fmt.Errorf("audit: %w", err)
			}
			return s, "syslog " + c.SyslogAddress, nil
		}
		s, err := audit.DialSyslog(so)
		if err != nil {
			return nil, "", fmt.Errorf("audit: %w", err)
		}
		return s, "syslog " + c.SyslogSocket, nil
	}
	return nil, "", fmt.Errorf("audit.sink: unknown sink %q", c.Type)
}

func serverEvent(socket string, landlockABI int, msg string) audit.ServerEvent {
	return audit.ServerEvent{
		Version:     versionString(),
		Socket:      socket,
		PID:         os.Getpid(),
		LandlockABI: landlockABI,
		Message:     msg,
	}
}

// notify tells systemd about a state change, when it is listening.
func notify(log *slog.Logger, state string) {
	if err := systemd.Notify(state); err != nil && !errors.Is(err, systemd.ErrNoNotifySocket) {
		log.Warn("systemd notification failed", "state", state, "err", err)
	}
}

// lookupOwner resolves the socket's owner and group (names or numbers);
// empty means unchanged (-1).
func lookupOwner(owner, group string) (int, int, error) {
	uid, gid := -1, -1
	if owner != "" {
		if n, err := strconv.Atoi(owner); err == nil {
			uid = n
		} else if u, err := user.Lookup(owner); err == nil {
			uid, _ = strconv.Atoi(u.Uid)
		} else {
			return 0, 0, fmt.Errorf("server.owner: %w", err)
		}
	}
	if group != "" {
		if n, err := strconv.Atoi(group); err == nil {
			gid = n
		} else if g, err := user.LookupGroup(group); err == nil {
			gid, _ = strconv.Atoi(g.Gid)
		} else {
			return 0, 0, fmt.Errorf("server.group: %w", err)
		}
	}
	return uid, gid, nil
}

// printConfig implements "sockwarden config": the effective configuration
// of the same command line, as TOML.
func printConfig(args []string, stdout, stderr io.Writer) int {
	cfg, o, err := parseServeArgs("sockwarden config", args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden config: %v\n", err)
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, versionString())
		return 0
	}
	var b bytes.Buffer
	if err := cfg.Encode(&b); err != nil {
		fmt.Fprintf(stderr, "sockwarden config: %v\n", err)
		return 1
	}
	stdout.Write(b.Bytes())
	return 0
}

// dumpState logs every live connection, as sockexec does on SIGUSR1.
func dumpState(log *slog.Logger, srv *server.Server) {
	st := srv.Stats()
	log.Info("state", "active", st.Active, "served", st.Served, "rejected", st.Rejected)
	for _, u := range srv.Usage() {
		log.Info("caller", "uid", u.UID, "connections", u.Conns, "refused_unrecorded", u.Refused)
	}
	for _, c := range srv.Conns() {
		log.Info("connection", "request_id", c.RequestID, "state", c.State.String(), "peer_pid", c.Peer.PID, "peer_uid", c.Peer.UID,
			"argv", audit.ArgvPreview(c.Argv), "child_pid", c.ChildPid, "age", time.Since(c.Since).Round(time.Millisecond).String())
	}
}

// setProcs sets how many threads run the server's Go code at once, and
// returns it: half of the CPUs the Go runtime would use (at least one),
// unless the GOMAXPROCS environment variable says otherwise. The programs
// the server runs need the CPU more than the server does, and on the
// 2-core VMs the Performance section measures, one P instead of two cut
// the server's CPU time per request by a quarter to a third (fewer
// scheduler wake-ups and spinning threads), with more requests served
// and faster floods (scripts/bench.sh, GOMAXPROCS=1 against 2).
func setProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := max(1, runtime.GOMAXPROCS(0)/2)
	runtime.GOMAXPROCS(n)
	return n
}
