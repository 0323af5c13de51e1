package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
)

// controlPlane is a test receiver of OPA's decision-log and status APIs:
// it keeps every decision log entry and every status report it gets.
type controlPlane struct {
	t     *testing.T
	token string

	mu        sync.Mutex
	decisions []map[string]any
	statuses  []map[string]any
	rawLogs   bytes.Buffer // every decision log batch, decompressed
	problems  []string
}

func (cp *controlPlane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if got := r.Header.Get("Authorization"); got != "Bearer "+cp.token {
		cp.problems = append(cp.problems, fmt.Sprintf("%s: Authorization %q", r.URL.Path, got))
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var body io.Reader = r.Body
	gzipped := r.Header.Get("Content-Encoding") == "gzip"
	if gzipped {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			cp.problems = append(cp.problems, fmt.Sprintf("%s: gzip: %v", r.URL.Path, err))
			http.Error(w, "bad gzip", http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/logs":
		if !gzipped {
			cp.problems = append(cp.problems, "a decision log batch without Content-Encoding: gzip")
		}
		var batch []map[string]any
		if err := json.Unmarshal(raw, &batch); err != nil {
			cp.problems = append(cp.problems, fmt.Sprintf("decision logs: %v", err))
		}
		cp.decisions = append(cp.decisions, batch...)
		cp.rawLogs.Write(raw)
	case "/status":
		var st map[string]any
		if err := json.Unmarshal(raw, &st); err != nil {
			cp.problems = append(cp.problems, fmt.Sprintf("status: %v", err))
		}
		cp.statuses = append(cp.statuses, st)
	default:
		cp.problems = append(cp.problems, "unexpected "+r.Method+" "+r.URL.Path)
		http.NotFound(w, r)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// waitStatus waits for a status report about the bundle for which cond
// holds, and returns it.
func (cp *controlPlane) waitStatus(what string, cond func(bundle map[string]any) bool) map[string]any {
	cp.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		cp.mu.Lock()
		for _, st := range cp.statuses {
			b, _ := st["bundles"].(map[string]any)
			sw, _ := b["sockwarden"].(map[string]any)
			if sw != nil && cond(sw) {
				cp.mu.Unlock()
				return st
			}
		}
		n := len(cp.statuses)
		cp.mu.Unlock()
		if time.Now().After(deadline) {
			cp.t.Fatalf("no status report %s among %d", what, n)
		}
	}
}

// bundleServer is nginx serving a directory of bundles with the
// walkthrough's configuration (examples/fleet/nginx-bundles.conf).
type bundleServer struct {
	dir  string // what nginx serves under /bundles/
	base string // http://127.0.0.1:PORT
	n    int
}

// startBundleServer starts nginx, its workers as nobody, on a loopback
// port; it is stopped by PID at the end of the test.
func startBundleServer(t *testing.T) *bundleServer {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatal("nginx is missing: scripts/deps.sh installs Debian's package")
	}
	// Readable by nginx's workers (nobody): not under t.TempDir's 0700.
	prefix, err := os.MkdirTemp("", "sw-bundles-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(prefix) })
	os.Chmod(prefix, 0o755)
	dir := filepath.Join(prefix, "srv")
	os.MkdirAll(dir, 0o755)
	port := freeLoopbackPort(t)
	conf := filepath.Join(prefix, "nginx.conf")
	mustWrite(t, conf, exampleConf(t, "nginx-bundles.conf",
		"error_log /var/log/nginx/bundles-error.log;", "error_log "+prefix+"/error.log;",
		"pid /run/nginx-bundles.pid;", "pid "+prefix+"/nginx.pid;",
		"access_log /var/log/nginx/bundles-access.log;", "access_log "+prefix+"/access.log;",
		"listen 8181;", fmt.Sprintf("listen 127.0.0.1:%d;", port),
		"alias /srv/bundles/;", "alias "+dir+"/;"))
	if out, err := exec.Command("nginx", "-t", "-p", prefix+"/", "-c", conf).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	cmd := exec.Command("nginx", "-p", prefix+"/", "-c", conf, "-g", "daemon off;")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	startDaemon(t, "nginx", cmd)
	// First (cleanups run last to first): the workers too, which hold
	// the output pipe startDaemon waits for.
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	bs := &bundleServer{dir: dir, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, _ := httpGet(t, bs.base+"/bundles/none"); code == http.StatusNotFound {
			return bs
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx does not serve")
		}
	}
}

// publish puts the bundle file src where nginx serves it as name, as an
// operator would: written next to it, then renamed over it. Each publish
// gets its own mtime, so that nginx's ETag changes.
func (bs *bundleServer) publish(t *testing.T, src, name string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(bs.dir, "."+name)
	mustWrite(t, tmp, string(b))
	os.Chmod(tmp, 0o644)
	bs.n++
	mt := time.Now().Add(time.Duration(bs.n) * time.Hour)
	os.Chtimes(tmp, mt, mt)
	if err := os.Rename(tmp, filepath.Join(bs.dir, name)); err != nil {
		t.Fatal(err)
	}
}

// opaBuild builds the policy rego into a bundle of revision rev, signed
// with priv unless priv is "", and returns its path.
func opaBuild(t *testing.T, dir, rev, rego, priv string) string {
	t.Helper()
	src := filepath.Join(dir, "src-"+rev)
	os.MkdirAll(src, 0o755)
	mustWrite(t, filepath.Join(src, "policy.rego"), rego)
	out := filepath.Join(dir, rev+".tar.gz")
	args := []string{"build", "-b", src, "--revision", rev, "-o", out}
	if priv != "" {
		args = append(args, "--signing-key", priv)
	}
	if b, err := exec.Command(opaBinary(t), args...).CombinedOutput(); err != nil {
		t.Fatalf("opa %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// bundlePolicy is the test's policy: echo runs, and so do the extra
// commands; anything else is denied with a message naming the revision.
func bundlePolicy(rev string, extra ...string) string {
	allowed := append([]string{"echo"}, extra...)
	q, _ := json.Marshal(allowed)
	return fmt.Sprintf(`package sockwarden

default decision := {"allow": false, "message": "%s says no"}

decision := {"allow": true, "run_as": {"user": "65534", "group": "65534"}} if input.argv[0] in %s
`, rev, q)
}

// TestControlPlaneBundles: sockwarden configured with OPA's agent
// configuration (the walkthrough's opa.yaml) follows the signed bundles a
// real nginx serves (the walkthrough's nginx-bundles.conf): it denies
// everything until the first bundle is in force, picks up a new revision
// within the polling interval with no restart and no failed request, and
// keeps the policy in force when nginx serves a tampered bundle, an
// unsigned one, or a signed one whose policy fails the load checks, each
// logged, audited, counted in the metrics and reported in status. Its
// decision logs reach the control plane in gzip batches whose entries
// carry the request ids of the audit trail and its masking.
func TestControlPlaneBundles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	priv, pub := writeRSAKeys(t, dir)
	pubPEM, _ := os.ReadFile(pub)

	cp := &controlPlane{t: t, token: "s3cr3t-control-token"}
	hs := httptest.NewServer(cp)
	t.Cleanup(hs.Close)
	tokenFile := filepath.Join(dir, "control.token")
	mustWrite(t, tokenFile, cp.token)

	bs := startBundleServer(t)
	indented := "      " + strings.ReplaceAll(strings.TrimSpace(string(pubPEM)), "\n", "\n      ") + "\n"
	opaConf := filepath.Join(dir, "opa.yaml")
	mustWrite(t, opaConf, exampleConf(t, "opa.yaml",
		"url: http://bundles.example.internal:8181", "url: "+bs.base,
		"url: http://opa-control.example.internal:8282", "url: "+hs.URL,
		"token_path: /etc/sockwarden/control.token", "token_path: "+tokenFile,
		"      -----BEGIN PUBLIC KEY-----\n      (the PEM of pub.pem)\n      -----END PUBLIC KEY-----\n", indented,
		"min_delay_seconds: 10\n      max_delay_seconds: 20", "min_delay_seconds: 1\n      max_delay_seconds: 2",
		"min_delay_seconds: 5\n    max_delay_seconds: 10", "min_delay_seconds: 1\n    max_delay_seconds: 1"))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	ts, tr := startAuditServerExtra(t, fmt.Sprintf("[policy]\nopa_config = %q\n[metrics]\nlisten = %q\n", opaConf, metricsAddr))
	metric := func(series string) float64 {
		t.Helper()
		_, body := httpGet(t, "http://"+metricsAddr+"/metrics")
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no series %s in /metrics", series)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	waitLog := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ts.logHas(what); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the server did not log %q", what)
			}
		}
	}
	run := func(argv ...string) *reply { return decodeReply(t, exchange(t, ts.Socket, request(argv, nil, true))) }

	// Nothing served yet: every request is denied, and /healthz says why.
	waitLog("bundle download failed")
	if r := run("echo", "hi"); r.Final[0] != "exitcode" || r.Final[1] == "0" {
		t.Errorf("before any bundle: echo ran: %v %q", r.Final, r.Stdout.String())
	}
	if code, body := httpGet(t, "http://"+metricsAddr+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "policy") {
		t.Errorf("/healthz before any bundle: %d %s", code, body)
	}
	if code, _ := httpGet(t, "http://"+metricsAddr+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before any bundle: %d, want 503", code)
	}

	// v1 is followed.
	v1 := opaBuild(t, dir, "v1", bundlePolicy("v1"), priv)
	bs.publish(t, v1, "sockwarden.tar.gz")
	waitLog(`"revision":"v1"`)
	if r := run("echo", "hi"); r.Final[1] != "0" || r.Stdout.String() != "hi\n" {
		t.Errorf("v1: echo: %v %q %q", r.Final, r.Stdout.String(), r.Stderr.String())
	}
	denyReply(t, exchange(t, ts.Socket, request([]string{"id"}, nil, true)), "v1 says no")
	if code, _ := httpGet(t, "http://"+metricsAddr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with v1 in force: %d", code)
	}
	if code, _ := httpGet(t, "http://"+metricsAddr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with v1 in force: %d", code)
	}

	// v2 is picked up while requests keep coming, none failing.
	var stop atomic.Bool
	var ran, failed atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				raw := exchange(t, ts.Socket, request([]string{"echo", "during"}, nil, true))
				if r := decodeReply(t, raw); r.Final[1] != "0" || r.Stdout.String() != "during\n" {
					failed.Add(1)
				}
				ran.Add(1)
			}
		})
	}
	v2 := opaBuild(t, dir, "v2", bundlePolicy("v2", "id"), priv)
	published := time.Now()
	bs.publish(t, v2, "sockwarden.tar.gz")
	waitLog(`"revision":"v2"`)
	took := time.Since(published)
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if failed.Load() > 0 || ran.Load() == 0 {
		t.Errorf("while v2 was picked up: %d of %d requests failed", failed.Load(), ran.Load())
	}
	t.Logf("v2 in force %v after it was published (polling 1-2 s); %d requests meanwhile", took.Round(time.Millisecond), ran.Load())
	if r := run("id", "-u"); r.Final[1] != "0" || r.Stdout.String() != "65534\n" {
		t.Errorf("v2: id: %v %q %q", r.Final, r.Stdout.String(), r.Stderr.String())
	}
	cp.waitStatus("with v2 active", func(b map[string]any) bool { return b["active_revision"] == "v2" })

	// Refused: each keeps v2 in force, and is logged, audited, counted
	// and reported.
	tampered := filepath.Join(dir, "tampered.tar.gz")
	tamperBundle(t, v2, tampered, "\ndecision := {\"allow\": true, \"run_as\": {\"user\": \"65534\", \"group\": \"65534\"}} if input.argv[0] == \"uname\"\n")
	unsigned := opaBuild(t, dir, "v3-unsigned", bundlePolicy("v3", "id", "uname"), "")
	malformed := opaBuild(t, dir, "v4-malformed", "package sockwarden\n\ndefault decision := {\"allow\": true, \"timout\": 5}\n", priv)
	for _, c := range []struct {
		name, file, why string
	}{
		{"tampered", tampered, "digest mismatch"},
		{"unsigned", unsigned, "signature"},
		{"malformed decision", malformed, "timout"},
	} {
		mark := tr.count(t)
		refusedBefore := metric(`sockwarden_policy_bundle_requests_total{name="sockwarden",result="refused"}`)
		bs.publish(t, c.file, "sockwarden.tar.gz")
		rs := tr.waitFor(t, mark, 20*time.Second, c.name+" refused", func(rs []rec) bool { return len(withAction(rs, audit.ActionPolicyReload)) > 0 })
		r := withAction(rs, audit.ActionPolicyReload)[0]
		t.Logf("%s: refused: %s", c.name, r.Str("error.message"))
		if r.Str("event.outcome") != "failure" || !strings.Contains(r.Str("error.message"), c.why) || r.Get("sockwarden.policy.revision") != "v2" {
			t.Errorf("%s: policy.reload record: %s", c.name, dumpRecs([]rec{r}))
		}
		if !ts.logHas("policy bundle refused") {
			t.Errorf("%s: not logged", c.name)
		}
		denyReply(t, exchange(t, ts.Socket, request([]string{"uname"}, nil, true)), "v2 says no")
		if got := metric(`sockwarden_policy_bundle_requests_total{name="sockwarden",result="refused"}`); got <= refusedBefore {
			t.Errorf("%s: refused counter %v, was %v", c.name, got, refusedBefore)
		}
		if got := metric(`sockwarden_policy_bundle_ok{name="sockwarden"}`); got != 0 {
			t.Errorf("%s: sockwarden_policy_bundle_ok = %v, want 0", c.name, got)
		}
		cp.waitStatus("refusing the "+c.name+" bundle", func(b map[string]any) bool {
			msg, _ := b["message"].(string)
			return b["code"] == "bundle_error" && strings.Contains(msg, c.why) && b["active_revision"] == "v2"
		})
	}

	// sockwarden status says so too.
	out, _, _ := runExit(t, exec.Command(binary(t), "status", metricsAddr))
	if !regexp.MustCompile(`bundle sockwarden +last request failed or refused, activated \S+ ago; requests: activated 2, failed [1-9]`).MatchString(out) {
		t.Errorf("sockwarden status:\n%s", out)
	}

	// Decision logs: every decision of the audit trail, by request id,
	// with the trail's masking.
	run("echo", "--password=hunter2")
	decisions := withAction(tr.all(t), audit.ActionDecision)
	want := map[string]bool{}
	for _, d := range decisions {
		want[d.RequestID()] = true
	}
	var entries map[string]map[string]any
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		cp.mu.Lock()
		entries = map[string]map[string]any{}
		for _, e := range cp.decisions {
			id, _ := e["decision_id"].(string)
			entries[id] = e
		}
		cp.mu.Unlock()
		missing := 0
		for id := range want {
			if entries[id] == nil {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d decisions of the audit trail are not in the decision logs", missing, len(want))
		}
	}
	var masked bool
	for _, e := range entries {
		in, _ := e["input"].(map[string]any)
		argv, _ := in["argv"].([]any)
		if len(argv) == 2 && argv[0] == "echo" && strings.HasPrefix(fmt.Sprint(argv[1]), "--password=") {
			masked = argv[1] == "--password=***"
		}
		if e["path"] != "sockwarden/decision" {
			t.Errorf("decision log entry path %v", e["path"])
		}
		labels, _ := e["labels"].(map[string]any)
		if labels["role"] != "web" || labels["id"] == nil {
			t.Errorf("decision log entry labels %v", labels)
		}
	}
	if !masked {
		t.Error("the decision log entry of echo --password=... is missing or not masked")
	}
	cp.mu.Lock()
	if bytes.Contains(cp.rawLogs.Bytes(), []byte("hunter2")) {
		t.Error("a decision log batch holds the masked secret")
	}
	if len(cp.problems) > 0 {
		t.Errorf("control plane: %s", strings.Join(cp.problems, "\n"))
	}
	cp.mu.Unlock()
}

// TestControlPlaneConfigErrors: a server whose OPA configuration cannot be
// followed does not start, and says why.
func TestControlPlaneConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	withBundles := filepath.Join(dir, "opa.yaml")
	mustWrite(t, withBundles, "services: {s: {url: \"http://127.0.0.1:1\"}}\nbundles: {b: {service: s}}\n")
	discovery := filepath.Join(dir, "discovery.yaml")
	mustWrite(t, discovery, "services: {s: {url: \"http://127.0.0.1:1\"}}\ndiscovery: {service: s, resource: /d}\n")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"missing file", []string{"--opa-config", filepath.Join(dir, "none.yaml")}, "policy.opa_config: open"},
		{"bundles and -p", []string{"--opa-config", withBundles, "-p", "testdata/policy/basic.rego"}, "both give the policy"},
		{"discovery", []string{"--opa-config", discovery}, "discovery is not supported"},
	} {
		out, errOut, code := runExit(t, exec.Command(binary(t), append(c.args, filepath.Join(shortTempDir(t), "s.sock"))...))
		if code != 1 || !strings.Contains(out+errOut, c.want) {
			t.Errorf("%s: exit %d, want 1 and %q\n%s%s", c.name, code, c.want, out, errOut)
		}
	}
}
