package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSyslogFormatAndFacility: [audit] syslog_format and syslog_facility
// reach the records on the syslog socket: RFC 3164 with facility local3
// (PRI 158 for info), the record as the message.
func TestSyslogFormatAndFacility(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	logSock := filepath.Join(dir, "log")
	pc, err := net.ListenPacket("unixgram", logSock)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg := filepath.Join(dir, "c.toml")
	mustWrite(t, cfg, fmt.Sprintf("[audit]\nsink = \"syslog\"\nsyslog_socket = %q\nsyslog_format = \"rfc3164\"\nsyslog_facility = \"local3\"\n", logSock))
	sock := filepath.Join(dir, "s.sock")
	startServerCmd(t, sock, exec.Command(binary(t), "-c", cfg, sock))
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	re := regexp.MustCompile(`^<158>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d sockwarden\[\d+\]: \{"@timestamp"`)
	if !re.MatchString(msg) || !strings.Contains(msg, `"action":"server.start"`) {
		t.Errorf("syslog message %q, want RFC 3164 with PRI 158 and the server.start record", msg)
	}
}

func mustWrite(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
