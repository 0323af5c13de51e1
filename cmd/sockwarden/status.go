package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const statusUsage = `Usage: sockwarden status ENDPOINT

Print a running server's figures for a person: health, requests by
outcome, decision and spawn latency, cache hits, connections, kills,
quota refusals, sandbox denials, the audit trail, the policy in force
and, with a control plane, its bundles.
ENDPOINT is the server's [metrics] listen: a loopback address
(127.0.0.1:9464, or http://127.0.0.1:9464) or a UNIX socket path. The same
figures are Prometheus's at /metrics.

Exit status: 0 healthy, 1 unhealthy (the audit trail cannot be written, or
no policy), 2 the endpoint cannot be read.
`

// runStatus implements `sockwarden status`.
func runStatus(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		fmt.Fprint(stderr, statusUsage)
		if len(args) == 1 {
			return 0
		}
		return 2
	}
	client, base := endpointClient(args[0])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	get := func(path string) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return 0, nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		return resp.StatusCode, b, err
	}
	code, health, err := get("/healthz")
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden status: %v\n", err)
		return 2
	}
	_, text, err := get("/metrics")
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden status: %v\n", err)
		return 2
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(text)))
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden status: %s/metrics: %v\n", base, err)
		return 2
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	healthy := code == http.StatusOK
	fmt.Fprintf(w, "health\t%s\n", strings.ReplaceAll(strings.TrimSpace(string(health)), "\n", "; "))
	if f := fams["sockwarden_policy_info"]; f != nil && len(f.Metric) > 0 {
		fmt.Fprintf(w, "policy\t%s (revision %s)\n", label(f.Metric[0], "source"), label(f.Metric[0], "revision"))
	}
	fmt.Fprintf(w, "policy reloads\tsucceeded %s, failed %s; last load %s\n",
		num(byLabel(fams, "sockwarden_policy_reloads_total", "result", "success")),
		num(byLabel(fams, "sockwarden_policy_reloads_total", "result", "failure")),
		map[bool]string{true: "succeeded", false: "failed"}[value(fams, "sockwarden_policy_last_reload_success") == 1])
	printBundles(w, fams)
	fmt.Fprintf(w, "requests\t%s\n", breakdown(fams, "sockwarden_requests_total", "outcome"))
	fmt.Fprintf(w, "connections now\t%s\n", num(value(fams, "sockwarden_connections_active")))
	fmt.Fprintf(w, "decision\t%s mean over %s, %s from the cache\n", mean(fams, "sockwarden_decision_duration_seconds"),
		num(count(fams, "sockwarden_decision_duration_seconds")), num(value(fams, "sockwarden_decision_cache_hits_total")))
	fmt.Fprintf(w, "spawn\t%s mean over %s\n", mean(fams, "sockwarden_spawn_duration_seconds"), num(count(fams, "sockwarden_spawn_duration_seconds")))
	fmt.Fprintf(w, "kills\t%s\n", breakdown(fams, "sockwarden_kills_total", "reason"))
	fmt.Fprintf(w, "quota refusals\t%s\n", breakdown(fams, "sockwarden_quota_refused_total", "kind"))
	fmt.Fprintf(w, "sandbox denials\t%s\n", breakdown(fams, "sockwarden_sandbox_denials_total", "access"))
	fmt.Fprintf(w, "audit\t%s records, %s bytes, %s failed writes\n", num(value(fams, "sockwarden_audit_records_total")),
		num(value(fams, "sockwarden_audit_bytes_total")), num(value(fams, "sockwarden_audit_write_failures_total")))
	w.Flush()
	if !healthy {
		return 1
	}
	return 0
}

// endpointClient returns an HTTP client for endpoint (an address, a URL
// or a UNIX socket path) and the base URL to use with it.
func endpointClient(endpoint string) (*http.Client, string) {
	if strings.HasPrefix(endpoint, "/") {
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", endpoint)
		}}
		return &http.Client{Transport: tr}, "http://sockwarden"
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "http://" + endpoint
	}
	return &http.Client{}, strings.TrimSuffix(endpoint, "/")
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// value is the sum of the family's samples.
func value(fams map[string]*dto.MetricFamily, name string) float64 {
	var v float64
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			v += metricValue(m)
		}
	}
	return v
}

func byLabel(fams map[string]*dto.MetricFamily, name, key, val string) float64 {
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			if label(m, key) == val {
				return metricValue(m)
			}
		}
	}
	return 0
}

// breakdown lists a family's samples by the label key, largest first:
// "allowed 12, denied 3", or "none".
func breakdown(fams map[string]*dto.MetricFamily, name, key string) string {
	f := fams[name]
	if f == nil {
		return "none"
	}
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for _, m := range f.Metric {
		all = append(all, kv{label(m, key), metricValue(m)})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || all[i].v == all[j].v && all[i].k < all[j].k })
	var parts []string
	for _, x := range all {
		parts = append(parts, fmt.Sprintf("%s %s", x.k, num(x.v)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func count(fams map[string]*dto.MetricFamily, name string) float64 {
	if f := fams[name]; f != nil && len(f.Metric) > 0 && f.Metric[0].Histogram != nil {
		return float64(f.Metric[0].Histogram.GetSampleCount())
	}
	return 0
}

func mean(fams map[string]*dto.MetricFamily, name string) string {
	f := fams[name]
	if f == nil || len(f.Metric) == 0 || f.Metric[0].Histogram == nil || f.Metric[0].Histogram.GetSampleCount() == 0 {
		return "-"
	}
	h := f.Metric[0].Histogram
	return time.Duration(h.GetSampleSum() / float64(h.GetSampleCount()) * float64(time.Second)).Round(time.Microsecond).String()
}

func num(v float64) string {
	return fmt.Sprintf("%.0f", v)
}

// printBundles prints a line per control-plane bundle: whether its last
// request went well, when it was last activated, and its requests by
// result.
func printBundles(w io.Writer, fams map[string]*dto.MetricFamily) {
	ok := fams["sockwarden_policy_bundle_ok"]
	if ok == nil {
		return
	}
	for _, m := range ok.Metric {
		name := label(m, "name")
		state := "ok"
		if metricValue(m) != 1 {
			state = "last request failed or refused"
		}
		activated := "never activated"
		if ts := byLabel(fams, "sockwarden_policy_bundle_last_successful_activation_timestamp_seconds", "name", name); ts > 0 {
			activated = "activated " + time.Since(time.Unix(0, int64(ts*1e9))).Round(time.Second).String() + " ago"
		}
		var parts []string
		if f := fams["sockwarden_policy_bundle_requests_total"]; f != nil {
			for _, r := range f.Metric {
				if label(r, "name") == name {
					parts = append(parts, fmt.Sprintf("%s %s", label(r, "result"), num(metricValue(r))))
				}
			}
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "bundle %s\t%s, %s; requests: %s\n", name, state, activated, strings.Join(parts, ", "))
	}
}
