// Package signing makes and checks the cluster's signatures: the leader
// signs what only it may issue (tasks, stream assignments, lease grants)
// with the cluster's ed25519 private key, and workers, which hold only the
// public key, verify them. It also derives the per-task tokens a result
// must echo, which the coordinators recompute from the private key.
//
// Why ed25519 rather than an HMAC key shared by coordinators and workers:
// a worker runs connectors against outside systems and is the process
// most exposed to compromise; with a shared HMAC key a compromised worker
// could issue tasks to every other worker (read any file they can, run
// SQL with their DSNs). With a public key it can only check signatures.
// Signing costs about 20 µs and verifying about 50 µs per message, noise
// beside a bounded task.
package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Kinds of signed messages: a signature made for one never verifies as
// another.
const (
	KindTask   = "task"
	KindAssign = "assign"
	KindLease  = "lease"
)

// ErrForged is returned, wrapped, by Verify for a message without a valid
// signature.
var ErrForged = errors.New("not signed by the cluster's key")

// Signer signs with the cluster's private key.
type Signer struct{ key ed25519.PrivateKey }

// Verifier checks signatures with the cluster's public key.
type Verifier struct{ key ed25519.PublicKey }

func payload(kind, subject string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("sluice-sig-v1\x00")
	b.WriteString(kind)
	b.WriteByte(0)
	b.WriteString(subject)
	b.WriteByte(0)
	b.Write(data)
	return b.Bytes()
}

// Sign returns the signature of a message of kind on subject with data,
// for a header.
func (s *Signer) Sign(kind, subject string, data []byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, payload(kind, subject, data)))
}

// Verifier returns the verifier of the signer's public key.
func (s *Signer) Verifier() *Verifier { return &Verifier{key: s.key.Public().(ed25519.PublicKey)} }

// Token is the token of a task, which its result must carry: only a
// holder of the private key (a coordinator) can make it and only readers
// of the task (workers) learn it. ed25519 signatures are deterministic,
// so every coordinator computes the same one.
func (s *Signer) Token(run, task string) string {
	sig := ed25519.Sign(s.key, payload("token", run, []byte(task)))
	sum := sha256.Sum256(sig)
	return base64.RawURLEncoding.EncodeToString(sum[:18])
}

// Verify checks sig, a header's signature of a message of kind on
// subject with data.
func (v *Verifier) Verify(kind, subject string, data []byte, sig string) error {
	if sig == "" {
		return fmt.Errorf("%s on %s has no signature: %w", kind, subject, ErrForged)
	}
	b, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || !ed25519.Verify(v.key, payload(kind, subject, data), b) {
		return fmt.Errorf("%s on %s: bad signature: %w", kind, subject, ErrForged)
	}
	return nil
}

// LeaseSubject is what a lease grant (the reply to a renewal) is signed
// over: the renewal request, so that a grant cannot be replayed for
// another.
func LeaseSubject(request []byte) string {
	sum := sha256.Sum256(request)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// Generate makes a new key pair.
func Generate() (*Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate the cluster key: %w", err)
	}
	return &Signer{key: priv}, nil
}

// File names WriteFiles writes in a directory.
const (
	PrivateFile = "cluster.key"
	PublicFile  = "cluster.pub"
)

// WriteFiles writes the private key (PKCS #8 PEM, mode 0600) and the
// public key (PKIX PEM, 0644) into dir.
func (s *Signer) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	priv, err := x509.MarshalPKCS8PrivateKey(s.key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, PrivateFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, PublicFile), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// LoadSigner reads a private key file WriteFiles wrote.
func LoadSigner(file string) (*Signer, error) {
	der, err := readPEM(file, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("cluster key %s: %w", file, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("cluster key %s: not an ed25519 key", file)
	}
	return &Signer{key: priv}, nil
}

// LoadVerifier reads a public key file WriteFiles wrote (or, for
// convenience, the private key file, whose public half it takes).
func LoadVerifier(file string) (*Verifier, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cluster public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk != nil && blk.Type == "PRIVATE KEY" {
		s, err := LoadSigner(file)
		if err != nil {
			return nil, err
		}
		return s.Verifier(), nil
	}
	der, err := readPEM(file, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("cluster public key %s: %w", file, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("cluster public key %s: not an ed25519 key", file)
	}
	return &Verifier{key: pub}, nil
}

func readPEM(file, typ string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", typ, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("%s holds no PEM block of type %s", file, strconv.Quote(typ))
	}
	return blk.Bytes, nil
}
