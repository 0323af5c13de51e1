package policy

import (
	"fmt"
	"os"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
)

// Verification is how bundles are verified, as opa run's flags of the
// same names say: every bundle must carry a .signatures.json signed with
// this key, and every file of the bundle must match it. With a
// Verification, every policy path must be a bundle.
type Verification struct {
	// KeyFile is the file of the public key (PEM) or, for the HS*
	// algorithms, the shared secret (--verification-key).
	KeyFile string
	// KeyID names the key in the bundles' signatures (default
	// "default", --verification-key-id).
	KeyID string
	// Alg is the signing algorithm (default RS256, --signing-alg).
	Alg string
	// Scope is the scope the signatures must carry, if any (--scope).
	Scope string
}

// config is v as OPA's bundle package takes it. The key is read from
// its file here: OPA takes a string that names no file for the key
// itself, which would turn a mistyped path into a secret.
func (v *Verification) config() (*bundle.VerificationConfig, error) {
	pem, err := os.ReadFile(v.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("verification key: %w", err)
	}
	alg, id := v.Alg, v.KeyID
	if alg == "" {
		alg = "RS256"
	}
	if id == "" {
		id = "default"
	}
	// keys.NewKeyConfig would stat the key's text as a path first (and
	// fail with ENAMETOOLONG on a PEM with a long line): the Config it
	// makes, made directly.
	kc := &keys.Config{Key: string(pem), Algorithm: alg, Scope: v.Scope}
	return bundle.NewVerificationConfig(map[string]*keys.Config{id: kc}, id, v.Scope, nil), nil
}
