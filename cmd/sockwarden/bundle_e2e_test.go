package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writeRSAKeys writes a new RSA key pair as PEM files into dir.
func writeRSAKeys(t *testing.T, dir string) (priv, pub string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub = filepath.Join(dir, "priv.pem"), filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// tamperBundle copies the bundle src to dst with extra appended to every
// .rego file, signatures untouched.
func tamperBundle(t *testing.T, src, dst, extra string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, ".rego") {
			body = append(body, extra...)
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSignedBundles: a bundle signed by opa build --signing-key is
// followed with --verification-key; the same bundle with a rule
// appended (tar rewritten, signature kept) is refused by check and by
// the server, as opa build --verification-key refuses it, and without a
// key the appended rule would be in force.
func TestSignedBundles(t *testing.T) {
	t.Parallel()
	opa := opaBinary(t)
	dir := t.TempDir()
	priv, pub := writeRSAKeys(t, dir)
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "policy.rego"), []byte("package sockwarden\n\ndefault decision := {\"allow\": false, \"message\": \"signed policy says no\"}\n"), 0o644)
	signed, tampered := filepath.Join(dir, "signed.tar.gz"), filepath.Join(dir, "tampered.tar.gz")
	if out, err := exec.Command(opa, "build", "-b", src, "--signing-key", priv, "-o", signed).CombinedOutput(); err != nil {
		t.Fatalf("opa build: %v\n%s", err, out)
	}
	tamperBundle(t, signed, tampered, "\ndecision := {\"allow\": true, \"run_as\": {\"user\": \"65534\", \"group\": \"65534\"}} if input.argv[0] == \"id\"\n")
	if out, err := exec.Command(opa, "build", "-b", tampered, "--verification-key", pub, "-o", filepath.Join(dir, "x.tar.gz")).CombinedOutput(); err == nil || !strings.Contains(string(out), "digest mismatch") {
		t.Fatalf("opa build --verification-key accepts the tampered bundle: %v\n%s", err, out)
	}

	check := func(bundle string, key bool) (string, int) {
		args := []string{"check", "-p", bundle, "--uid", "33"}
		if key {
			args = append(args, "--verification-key", pub)
		}
		out, errOut, code := runExit(t, exec.Command(binary(t), append(args, "--", "id")...))
		return out + errOut, code
	}
	if out, code := check(signed, true); code != 1 || !strings.Contains(out, "signed policy says no") {
		t.Errorf("signed bundle with the key: exit %d\n%s", code, out)
	}
	if out, code := check(tampered, true); code != 2 || !strings.Contains(out, "digest mismatch") {
		t.Errorf("tampered bundle with the key: exit %d, want 2 and a digest mismatch\n%s", code, out)
	}
	if out, code := check(tampered, false); code != 0 {
		t.Errorf("control: tampered bundle without a key: exit %d, want 0 (the appended rule allows id)\n%s", code, out)
	}

	// The server refuses to start on it, and serves the signed one.
	out, err := exec.Command(binary(t), "-p", tampered, "--verification-key", pub, filepath.Join(shortTempDir(t), "s.sock")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "digest mismatch") {
		t.Errorf("server on the tampered bundle: %v\n%s", err, out)
	}
	ts := startServer(t, "-p", signed, "--verification-key", pub)
	denyReply(t, exchange(t, ts.Socket, request([]string{"id"}, nil, true)), "signed policy says no")
}
