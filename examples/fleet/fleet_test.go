// Package fleet holds the fleet walkthrough's configurations
// (README.md); this test checks them with the tools that read them.
// cmd/sockwarden's TestAuditThroughRsyslog runs the rsyslog ones.
package fleet

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPrometheusConfig: promtool accepts the scrape configuration and the
// alert rules, and the rules' unit tests (alerts_test.yml: each alert
// fires when it should and not before) pass.
func TestPrometheusConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: scripts/deps.sh installs Debian's prometheus")
	}
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
