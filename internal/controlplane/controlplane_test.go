package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/server"

	"github.com/sockwarden/sockwarden/policy"
)

// TestNewRefuses: what sockwarden does not implement is refused with an
// error naming it, never accepted and ignored.
func TestNewRefuses(t *testing.T) {
	const svc = "services: {s: {url: \"http://127.0.0.1:1\"}}\n"
	for _, c := range []struct {
		name, config, want string
	}{
		{"not yaml", "services: [", "opa config"},
		{"discovery", svc + "discovery: {service: s, resource: /d}\n", "discovery is not supported"},
		{"plugins", svc + "plugins: {x: {}}\n", "plugins is not supported"},
		{"persistence", svc + "persistence_directory: /tmp\n", "persistence_directory is not supported"},
		{"legacy bundle", svc + "bundle: {name: b, service: s}\n", "use bundles"},
		{"unknown service", svc + "bundles: {b: {service: nope, resource: /b.tar.gz}}\n", "bundles"},
		{"file resource", svc + "bundles: {b: {resource: \"file:///tmp/b.tar.gz\"}}\n", "file:// resources are not supported"},
		{"persist", svc + "bundles: {b: {service: s, persist: true}}\n", "persist is not supported"},
		{"manual trigger", svc + "bundles: {b: {service: s, trigger: manual}}\n", "trigger mode mismatch"},
		{"signing without keys", svc + "bundles: {b: {service: s, signing: {keyid: k}}}\n", "bundles"},
		{"decision log plugin", svc + "decision_logs: {plugin: x}\n", "decision_logs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(testOptions([]byte(c.config), nil))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v, want an error with %q", err, c.want)
			}
		})
	}
	// The control: a complete configuration is accepted.
	a, err := New(testOptions([]byte(svc+"bundles: {b: {service: s}}\ndecision_logs: {service: s}\nstatus: {service: s}\nlabels: {role: web}\n"), nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Bundles(); len(got) != 1 || got[0] != "b" || !a.DecisionLogs() || !a.Status() {
		t.Errorf("bundles %v, decision logs %v, status %v", got, a.DecisionLogs(), a.Status())
	}
}

// testOptions are Options loading bundles with sockwarden's checks and
// sending each Event to events (if not nil).
func testOptions(config []byte, events chan<- Event) Options {
	return Options{
		Config: config,
		Load: func(ctx context.Context, bs map[string]*bundle.Bundle) (*policy.Engine, error) {
			return policy.LoadBundles(ctx, policy.Options{Timeout: 10 * time.Second}, bs)
		},
		OnBundles: func(ev Event) {
			if events != nil {
				events <- ev
			}
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// bundleServer serves bundles by path, with ETags, as a bundle server does.
type bundleServer struct {
	mu    sync.Mutex
	files map[string][]byte
	n     int
}

func (s *bundleServer) put(path string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = b
	s.n++
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	b, ok := s.files[r.URL.Path]
	etag := fmt.Sprintf("%q", fmt.Sprint(s.n))
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	w.Write(b)
}

// tarball is a bundle of revision rev with root root: the module text,
// signed with priv unless priv is "".
func tarball(t *testing.T, rev, root, module string, data map[string]any, priv string) []byte {
	t.Helper()
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: rev, Roots: &[]string{root}}, Data: data}
	if module != "" {
		b.Modules = []bundle.ModuleFile{{URL: root + "/policy.rego", Path: root + "/policy.rego", Raw: []byte(module)}}
	}
	if data == nil {
		b.Data = map[string]any{}
	}
	if priv != "" {
		if err := b.GenerateSignature(bundle.NewSigningConfig(priv, "RS256", ""), "k", false); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rsaPEM(t *testing.T) (priv, pub string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// start starts an agent on config, served by hs, and stops it at the end
// of the test, checking that it leaves no goroutine behind once hs has
// closed its connections (OPA's REST clients keep idle keep-alive
// connections, as any net/http client does).
func start(t *testing.T, hs *httptest.Server, config string, events chan<- Event) *Agent {
	t.Helper()
	before := runtime.NumGoroutine()
	a, err := New(testOptions([]byte(config), events))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Stop(ctx)
		hs.CloseClientConnections()
		for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines after Stop, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
		}
	})
	return a
}

func next(t *testing.T, events <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no bundle event")
		return Event{}
	}
}

const denyAll = "package sockwarden\n\ndefault decision := {\"allow\": false, \"message\": \"MSG\"}\n"

// TestKeysRequireSignatures: with keys configured and no signing block
// (where OPA would accept an unsigned bundle), an unsigned bundle is
// refused; a signed one is activated.
func TestKeysRequireSignatures(t *testing.T) {
	priv, pub := rsaPEM(t)
	bs := &bundleServer{files: map[string][]byte{}}
	hs := httptest.NewServer(bs)
	t.Cleanup(hs.Close)
	keyJSON, _ := json.Marshal(pub)
	config := fmt.Sprintf("services: {s: {url: %q}}\nkeys: {k: {algorithm: RS256, key: %s}}\nbundles: {b: {service: s, resource: /b.tar.gz, polling: {min_delay_seconds: 1, max_delay_seconds: 1}}}\n", hs.URL, keyJSON)
	bs.put("/b.tar.gz", tarball(t, "unsigned", "sockwarden", strings.Replace(denyAll, "MSG", "unsigned", 1), nil, ""))
	events := make(chan Event, 16)
	a := start(t, hs, config, events)
	ev := next(t, events)
	if ev.Err == nil || !strings.Contains(ev.Err.Error(), ".signatures.json") || ev.Engine != nil {
		t.Fatalf("unsigned bundle: %+v", ev)
	}
	if st := a.BundleStatus()["b"]; st.Code != "bundle_error" || st.ActiveRevision != "" {
		t.Errorf("status after the refusal: %+v", st)
	}
	bs.put("/b.tar.gz", tarball(t, "signed", "sockwarden", strings.Replace(denyAll, "MSG", "signed", 1), nil, priv))
	for ev = next(t, events); ev.Err != nil; ev = next(t, events) {
		if !ev.Repeated {
			t.Errorf("the same refusal again is not marked repeated: %+v", ev)
		}
	}
	if ev.Engine == nil || ev.Engine.Revision() != "signed" {
		t.Fatalf("signed bundle: %+v", ev)
	}
	if st := a.BundleStatus()["b"]; st.Code != "" || st.ActiveRevision != "signed" || len(a.Pending()) != 0 {
		t.Errorf("status after activation: %+v, pending %v", st, a.Pending())
	}
}

// TestSeveralBundles: two bundles (one with the policy, one with the data
// it reads) make one policy, put in force only once both came; a new
// revision of either makes a new engine from both.
func TestSeveralBundles(t *testing.T) {
	bs := &bundleServer{files: map[string][]byte{}}
	hs := httptest.NewServer(bs)
	t.Cleanup(hs.Close)
	config := fmt.Sprintf("services: {s: {url: %q}}\nbundles:\n  policy: {service: s, resource: /policy.tar.gz, polling: {min_delay_seconds: 1, max_delay_seconds: 1}}\n  tools: {service: s, resource: /tools.tar.gz, polling: {min_delay_seconds: 1, max_delay_seconds: 1}}\n", hs.URL)
	const rego = "package sockwarden\n\ndefault decision := {\"allow\": false}\n\ndecision := {\"allow\": true} if data.tools[input.argv[0]]\n"
	bs.put("/policy.tar.gz", tarball(t, "p1", "sockwarden", rego, nil, ""))
	events := make(chan Event, 16)
	a := start(t, hs, config, events)
	ev := next(t, events)
	if ev.Bundle != "policy" || ev.Engine != nil || ev.Err != nil {
		t.Fatalf("first of two bundles: %+v", ev)
	}
	if p := a.Pending(); len(p) != 2 {
		t.Errorf("pending %v, want both until both came", p)
	}
	bs.put("/tools.tar.gz", tarball(t, "t1", "tools", "", map[string]any{"tools": map[string]any{"id": true}}, ""))
	for ev = next(t, events); ev.Engine == nil; ev = next(t, events) {
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
	}
	if ev.Engine.Revision() != "p1+t1" {
		t.Errorf("revision %q, want p1+t1", ev.Engine.Revision())
	}
	in := policy.Input{Argv: []string{"id"}, Exe: "/usr/bin/id"}
	if d := ev.Engine.Evaluate(context.Background(), in); !d.Allow {
		t.Errorf("id with the tools bundle: %+v", d)
	}
	bs.put("/tools.tar.gz", tarball(t, "t2", "tools", "", map[string]any{"tools": map[string]any{"uname": true}}, ""))
	for ev = next(t, events); ev.Engine == nil || ev.Engine.Revision() != "p1+t2"; ev = next(t, events) {
	}
	if d := ev.Engine.Evaluate(context.Background(), in); d.Allow {
		t.Errorf("id after the tools bundle dropped it: %+v", d)
	}
	if got := a.bundles.revisions(ev.Engine.Revision()); got["policy"].Revision != "p1" || got["tools"].Revision != "t2" {
		t.Errorf("decision log revisions %v", got)
	}
}

// BenchmarkLogDecision is the cost decision logs add to a request: one
// entry queued on the request's path, then handed to OPA's decision-log
// plugin on the queue's goroutine (uploads happen on the plugin's own).
func BenchmarkLogDecision(b *testing.B) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	b.Cleanup(hs.Close)
	config := fmt.Sprintf("services: {s: {url: %q}}\ndecision_logs: {service: s, reporting: {min_delay_seconds: 1, max_delay_seconds: 1}}\n", hs.URL)
	a, err := New(testOptions([]byte(config), nil))
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Stop(context.Background()) })
	in := policy.Input{
		Argv: []string{"convert", "-resize", "50%", "/srv/in.png", "/srv/out.png"}, Exe: "/usr/bin/convert",
		Peer:   policy.Peer{PID: 4242, UID: 33, GID: 33, User: "www-data", Group: "www-data"},
		Socket: "/run/sockwarden/exec.sock", RequestID: "01M8W9XXW06VFC6W9ZT3NN07H5", Time: time.Now(),
	}
	var result any = map[string]any{"allow": true}
	// On the request's path: the entry is queued.
	b.Run("queue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.LogDecision(context.Background(), &in, result, "r1", nil)
		}
	})
	// Off it, on the queue's goroutine: OPA's plugin takes the entry.
	b.Run("plugin", func(b *testing.B) {
		var input any = &in
		b.ReportAllocs()
		for b.Loop() {
			a.logs.Log(context.Background(), &server.Info{DecisionID: in.RequestID, Path: "sockwarden/decision", Timestamp: in.Time, Input: &input, Results: &result})
		}
	})
}
