package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freeLoopbackPort returns a TCP port free on 127.0.0.1 a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startDaemon starts cmd, a service a test needs (Prometheus, rsyslogd),
// and stops it by PID at the end of the test, showing its output if the
// test failed.
func startDaemon(t *testing.T, name string, cmd *exec.Cmd) {
	t.Helper()
	var logs bytes.Buffer // read after Wait only
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, logs.String())
		}
	})
}

// startPrometheus starts Debian's prometheus on a loopback port, scraping
// target every second, and returns its base URL; it is stopped by PID at
// the end of the test.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is missing: scripts/deps.sh installs Debian's package")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sockwarden
    static_configs:
      - targets: [%q]
`, target)), 0o644)
	port := freeLoopbackPort(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	startDaemon(t, "prometheus", cmd)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := httpGet(t, base+"/-/ready"); code == http.StatusOK {
			return base
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus did not become ready")
		}
	}
}

// promValue queries Prometheus for an instant value of query, -1 when
// it has none (yet).
func promValue(t *testing.T, base, query string) float64 {
	t.Helper()
	code, body := httpGet(t, base+"/api/v1/query?query="+url.QueryEscape(query))
	if code != http.StatusOK {
		t.Fatalf("query %s: %d %s", query, code, body)
	}
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("query %s: %v\n%s", query, err, body)
	}
	if len(r.Data.Result) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(r.Data.Result[0].Value[1].(string), 64)
	return v
}

// TestPrometheusScrape: a real Prometheus scrapes sockwarden's /metrics;
// its request counter, as Prometheus reports it, rises by exactly the
// requests sent, by outcome; /healthz and /readyz answer.
func TestPrometheusScrape(t *testing.T) {
	t.Parallel()
	port := freeLoopbackPort(t)
	target := fmt.Sprintf("127.0.0.1:%d", port)
	ts, _ := startAuditServerExtra(t, fmt.Sprintf("[metrics]\nlisten = %q\n", target), "-p", "testdata/policy/basic.rego")
	ts.waitLog(t, "metrics: serving", 0)
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, "http://"+target+path); code != http.StatusOK {
			t.Errorf("%s: %d %q", path, code, body)
		}
	}
	base := startPrometheus(t, target)
	wait := func(query string, want float64) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
			got := promValue(t, base, query)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v in Prometheus, want %v", query, got, want)
			}
		}
	}
	allowed := `sockwarden_requests_total{job="sockwarden",outcome="allowed"}`
	denied := `sockwarden_requests_total{job="sockwarden",outcome="denied"}`
	wait(allowed, 0)
	wait(denied, 0)
	const nAllowed, nDenied = 5, 3
	for range nAllowed {
		if r := decodeReply(t, exchange(t, ts.Socket, request([]string{"echo", "hi"}, nil, true))); r.Final[1] != "0" {
			t.Fatalf("echo: %v %q", r.Final, r.Stderr.String())
		}
	}
	for range nDenied {
		denyReply(t, exchange(t, ts.Socket, request([]string{"date"}, nil, true)), "not on the list")
	}
	wait(allowed, nAllowed)
	wait(denied, nDenied)
	wait(`sockwarden_requests_total{job="sockwarden",outcome="error"}`, 0)
	wait(`sum(sockwarden_decision_duration_seconds_count{job="sockwarden"})`, nAllowed+nDenied)
	wait(`sockwarden_spawn_duration_seconds_count{job="sockwarden"}`, nAllowed)
	wait(`sockwarden_audit_healthy{job="sockwarden"}`, 1)
	wait(`sockwarden_policy_last_reload_success{job="sockwarden"}`, 1)
	if v := promValue(t, base, `sockwarden_audit_records_total{job="sockwarden"}`); v < 1+nAllowed*3+nDenied {
		t.Errorf("audit records %v, want at least %d", v, 1+nAllowed*3+nDenied)
	}
}

// TestStatus: sockwarden status reads a server's metrics endpoint (here
// a UNIX socket) and prints its figures for a person; it exits 2 when
// the endpoint cannot be read.
func TestStatus(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortTempDir(t), "metrics.sock")
	ts, _ := startAuditServerExtra(t, fmt.Sprintf("[metrics]\nlisten = %q\n", sock), "-p", "testdata/policy/basic.rego")
	ts.waitLog(t, "metrics: serving", 0)
	decodeReply(t, exchange(t, ts.Socket, request([]string{"echo", "hi"}, nil, true)))
	for range 2 {
		denyReply(t, exchange(t, ts.Socket, request([]string{"date"}, nil, true)), "not on the list")
	}
	out, errOut, code := runExit(t, exec.Command(binary(t), "status", sock))
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"health           ok", "requests         denied 2, allowed 1, error 0, refused 0", "basic.rego (revision ", "audit            "} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := runExit(t, exec.Command(binary(t), "status", sock+".none")); code != 2 || errOut == "" {
		t.Errorf("status of a missing endpoint: exit %d %q", code, errOut)
	}
}
