package policy

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// rsaKeys returns a new RSA key pair as PEM: the private key, and the
// file of the public key.
func rsaKeys(t *testing.T) (string, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return string(priv), pub
}

// signedBundle writes a bundle of modules, signed with priv (unless ""),
// with tamper applied to its modules after signing, and returns its path.
func signedBundle(t *testing.T, priv string, modules map[string]string, tamper func(*bundle.Bundle)) string {
	t.Helper()
	b := newBundle("r1", modules, map[string]any{})
	if priv != "" {
		if err := b.GenerateSignature(bundle.NewSigningConfig(priv, "RS256", ""), "default", false); err != nil {
			t.Fatal(err)
		}
	}
	if tamper != nil {
		tamper(&b)
	}
	return writeBundleFile(t, b)
}

// TestBundleVerification: with a verification key, a signed bundle loads;
// a tampered one (a rule appended after signing), an unsigned one, one
// signed with another key and a plain directory are refused. Without a
// key, the tampered bundle loads: nothing is verified then.
func TestBundleVerification(t *testing.T) {
	priv, pub := rsaKeys(t)
	otherPriv, _ := rsaKeys(t)
	mods := map[string]string{"sockwarden/policy.rego": "package sockwarden\n\ndefault decision := {\"allow\": false}\n"}
	appendAllow := func(b *bundle.Bundle) {
		b.Modules[0].Raw = append(b.Modules[0].Raw, []byte("\ndecision := {\"allow\": true} if input.argv[0] == \"id\"\n")...)
	}
	key := &Verification{KeyFile: pub}
	idInput := Input{Argv: []string{"id"}, Exe: "/usr/bin/id"}

	e := mustLoad(t, Options{Paths: []string{signedBundle(t, priv, mods, nil)}, Verification: key})
	if d := e.Evaluate(context.Background(), idInput); d.Allow || d.Err != nil {
		t.Errorf("signed bundle: %+v", d)
	}
	tampered := signedBundle(t, priv, mods, appendAllow)
	for _, tt := range []struct {
		name, path, want string
	}{
		{"tampered", tampered, "digest mismatch"},
		{"unsigned", signedBundle(t, "", mods, nil), ".signatures.json"},
		{"signed with another key", signedBundle(t, otherPriv, mods, nil), "verification"},
		{"plain directory", writeFiles(t, mods), "not a bundle"},
	} {
		_, err := Load(context.Background(), Options{Paths: []string{tt.path}, Verification: key})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
	if _, err := Load(context.Background(), Options{Paths: []string{tampered}, Verification: &Verification{KeyFile: pub + ".missing"}}); err == nil || !strings.Contains(err.Error(), "verification key") {
		t.Errorf("missing key file: %v", err)
	}
	// The control: without a key the tampered rule is in force.
	e = mustLoad(t, Options{Paths: []string{tampered}})
	if d := e.Evaluate(context.Background(), idInput); !d.Allow {
		t.Errorf("tampered bundle without a key: %+v (the test's tampering did not take)", d)
	}
}
