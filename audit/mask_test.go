package audit_test

import (
	"slices"
	"testing"

	"github.com/sockwarden/sockwarden/audit"
)

func TestMask(t *testing.T) {
	def := audit.DefaultMaskPatterns()
	tests := []struct {
		name      string
		argv      []string
		positions []int
		want      []string
		pointers  []string
	}{
		{"nothing", []string{"uname", "-a"}, nil, []string{"uname", "-a"}, nil},
		{"a password flag", []string{"mysql", "--password=hunter2", "db"}, nil, []string{"mysql", "--password=***", "db"}, []string{"/process/args/1"}},
		{"a header", []string{"curl", "-H", "Authorization: Bearer s3cr3t", "https://x/"}, nil,
			[]string{"curl", "-H", "Authorization:***", "https://x/"}, []string{"/process/args/2"}},
		{"a token, any case", []string{"tool", "API_TOKEN=abc", "GITHUB_Token=def"}, nil,
			[]string{"tool", "API_TOKEN=***", "GITHUB_Token=***"}, []string{"/process/args/1", "/process/args/2"}},
		{"by position", []string{"login", "alice", "hunter2"}, []int{2}, []string{"login", "alice", "***"}, []string{"/process/args/2"}},
		{"a URL is not a key", []string{"curl", "https://example.com/?q=1"}, nil, []string{"curl", "https://example.com/?q=1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := slices.Clone(tt.argv)
			got, ptrs := audit.Mask(tt.argv, tt.positions, def)
			if !slices.Equal(got, tt.want) || !slices.Equal(ptrs, tt.pointers) {
				t.Errorf("got %q %q, want %q %q", got, ptrs, tt.want, tt.pointers)
			}
			if !slices.Equal(tt.argv, orig) {
				t.Error("Mask changed its argument")
			}
		})
	}
	if err := audit.CheckMaskPatterns([]string{"[x"}); err == nil {
		t.Error("a malformed pattern passed")
	}
}
