package natsauth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Client says how a process authenticates to NATS and encrypts its
// connection. At most one of CredsFile, NKeyFile and User is set; a
// zero Client connects without credentials and without TLS (unless the
// URL says tls://).
type Client struct {
	// CredsFile is a credentials file (a user JWT and its nkey seed), as
	// nsc writes them for an operator-mode server.
	CredsFile string
	// NKeyFile holds a user's nkey seed (SU...), as `sluice security nats-config`
	// writes them.
	NKeyFile string
	// User and Password authenticate by name.
	User, Password string
	// CAFile verifies the server's certificate (default: the system's
	// roots); CertFile and KeyFile are this client's certificate for
	// mutual TLS.
	CAFile, CertFile, KeyFile string
}

// Environment variables FromEnv reads.
const (
	EnvCreds        = "SLUICE_NATS_CREDS"
	EnvNKey         = "SLUICE_NATS_NKEY"
	EnvUser         = "SLUICE_NATS_USER"
	EnvPassword     = "SLUICE_NATS_PASSWORD"
	EnvPasswordFile = "SLUICE_NATS_PASSWORD_FILE"
	EnvCA           = "SLUICE_NATS_CA"
	EnvCert         = "SLUICE_NATS_CERT"
	EnvKey          = "SLUICE_NATS_KEY"
)

// FillFromEnv sets the fields still empty from the environment. The
// password comes only from the environment or a file, never a flag.
func (c *Client) FillFromEnv() error {
	set := func(p *string, env string) {
		if *p == "" {
			*p = os.Getenv(env)
		}
	}
	set(&c.CredsFile, EnvCreds)
	set(&c.NKeyFile, EnvNKey)
	set(&c.User, EnvUser)
	set(&c.CAFile, EnvCA)
	set(&c.CertFile, EnvCert)
	set(&c.KeyFile, EnvKey)
	if c.Password == "" {
		if f := os.Getenv(EnvPasswordFile); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("read the NATS password (%s): %w", EnvPasswordFile, err)
			}
			c.Password = strings.TrimSpace(string(b))
		} else {
			c.Password = os.Getenv(EnvPassword)
		}
	}
	return nil
}

// Empty reports whether c sets no credentials and no TLS.
func (c Client) Empty() bool { return c == Client{} }

// Validate checks that c is consistent, without reading any file.
func (c Client) Validate() error {
	n := 0
	for _, s := range []string{c.CredsFile, c.NKeyFile, c.User} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return errors.New("NATS credentials: set one of a credentials file, an nkey seed file or a user")
	}
	if c.Password != "" && c.User == "" {
		return errors.New("NATS credentials: a password without a user")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("NATS TLS: a client certificate needs its key, and a key its certificate")
	}
	return nil
}

// Options returns the nats.Connect options that authenticate with c and
// set up its TLS.
func (c Client) Options() ([]nats.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch {
	case c.CredsFile != "":
		if _, err := os.Stat(c.CredsFile); err != nil {
			return nil, fmt.Errorf("NATS credentials file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeyFile != "":
		opt, err := NKeyOption(c.NKeyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opt)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.CAFile != "" || c.CertFile != "" {
		cfg, err := ClientTLS(c.CAFile, c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS TLS: %w", err)
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// NKeyOption authenticates with the nkey seed in file.
func NKeyOption(file string) (nats.Option, error) {
	seed, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read the NATS nkey seed: %w", err)
	}
	return SeedOption(seed)
}

// SeedOption authenticates with a user's nkey seed.
func SeedOption(seed []byte) (nats.Option, error) {
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return nil, fmt.Errorf("NATS nkey seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("NATS nkey seed: %w", err)
	}
	return nats.Nkey(pub, kp.Sign), nil
}

// ClientTLS is a TLS client configuration: the server verified by the CA
// in caFile (the system's roots when empty), this client's certificate
// from certFile and keyFile when set.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in the CA file %s", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load the client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// RedactURL returns urls (comma-separated NATS URLs) with any password or
// token in them replaced by xxxxx, for logs and messages.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			if err != nil && strings.Contains(p, "@") {
				parts[i] = "xxxxx@" + p[strings.LastIndex(p, "@")+1:]
			}
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx") // a token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
