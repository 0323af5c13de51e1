package kaudit

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		data   string
		serial uint64
		want   map[string]string // key: Text()
	}{
		{`audit(1796236565.636:10): domain=1e428eeec blockers=fs.ioctl_dev path="/dev/null" dev="devtmpfs" ino=3 ioctlcmd=0x5401`, 10,
			map[string]string{"domain": "1e428eeec", "blockers": "fs.ioctl_dev", "path": "/dev/null", "ino": "3", "ioctlcmd": "0x5401"}},
		{`audit(1796236389.724:6): domain=1e428eeea blockers=fs.make_reg path=2F746D702F612062 dev="vda" ino=10002486`, 6,
			map[string]string{"path": "/tmp/a b", "dev": "vda"}},
		{`audit(1796236565.920:16): domain=1e428eeec status=deallocated denials=7`, 16,
			map[string]string{"status": "deallocated", "denials": "7"}},
		{`audit(1.5:7): proctitle word key=(null) empty=""`, 7, map[string]string{"key": "(null)", "empty": ""}},
		{`audit(1.5:8):`, 8, map[string]string{}},
	}
	for _, tt := range tests {
		p, err := Parse([]byte(tt.data))
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.data, err)
			continue
		}
		if p.Serial != tt.serial {
			t.Errorf("Parse(%q).Serial = %d, want %d", tt.data, p.Serial, tt.serial)
		}
		for k, v := range tt.want {
			f, ok := p.Get(k)
			if !ok || f.Text() != v {
				t.Errorf("Parse(%q): %s = %q (present %v), want %q", tt.data, k, f.Text(), ok, v)
			}
		}
	}
	for _, bad := range []string{"", "type=1423 msg=x", "audit(1.5): x=1", "audit(1.5:x): x=1"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

// TestParseKernelRecords parses every record of testdata/landlock.txt,
// as the kernel wrote them.
func TestParseKernelRecords(t *testing.T) {
	f, err := os.Open("testdata/landlock.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		typ, text, _ := strings.Cut(line, " ")
		if _, err := strconv.Atoi(typ); err != nil {
			t.Fatalf("bad line %q", line)
		}
		p, err := Parse([]byte(text))
		if err != nil {
			t.Errorf("%s: %v", line, err)
			continue
		}
		if p.Serial == 0 || p.Time == "" {
			t.Errorf("%s: no header: %+v", line, p)
		}
		n++
	}
	if n < 10 {
		t.Fatalf("parsed %d records", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`audit(1796236565.636:10): domain=1e428eeec blockers=fs.ioctl_dev path="/dev/null" dev="devtmpfs"`))
	f.Add([]byte(`audit(1.5:8): a="b c=d e`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		for _, fl := range p.Fields {
			_ = fl.Text()
		}
	})
}
