package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/natsauth"
)

// natsAuthFlags say how a process authenticates to NATS and encrypts its
// connection; each flag falls back to a SLUICE_NATS_* variable. A
// password is never a flag (ps would show it).
type natsAuthFlags struct {
	c            natsauth.Client
	passwordFile string
}

func (f *natsAuthFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.c.CredsFile, "nats-creds", "", "NATS credentials `file` (user JWT and seed; default $SLUICE_NATS_CREDS)")
	fs.StringVar(&f.c.NKeyFile, "nats-nkey", "", "`file` holding this process's NATS nkey seed, as `sluice security nats-config` writes them (default $SLUICE_NATS_NKEY)")
	fs.StringVar(&f.c.User, "nats-user", "", "NATS user name (default $SLUICE_NATS_USER; the password from --nats-password-file, $SLUICE_NATS_PASSWORD_FILE or $SLUICE_NATS_PASSWORD)")
	fs.StringVar(&f.passwordFile, "nats-password-file", "", "`file` holding the NATS user's password")
	fs.StringVar(&f.c.CAFile, "nats-ca", "", "CA `file` that signed the NATS server's certificate (default $SLUICE_NATS_CA; with it the connection uses TLS)")
	fs.StringVar(&f.c.CertFile, "nats-cert", "", "client certificate `file` for NATS mutual TLS (default $SLUICE_NATS_CERT)")
	fs.StringVar(&f.c.KeyFile, "nats-key", "", "client key `file` for NATS mutual TLS (default $SLUICE_NATS_KEY)")
}

// options returns the connection options the flags and environment say.
// devDir, when the URL came from a local dev's nats.url, is that dev's
// data directory: without credentials of its own a client then uses the
// dev's admin key.
func (f *natsAuthFlags) options(devDir string) ([]nats.Option, error) {
	c := f.c
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-password-file: %w", err)
		}
		c.Password = string(trimSpace(b))
	}
	if err := c.FillFromEnv(); err != nil {
		return nil, err
	}
	if devDir != "" && c.CredsFile == "" && c.NKeyFile == "" && c.User == "" {
		seed := natsauth.SeedFile(filepath.Join(devDir, devcluster.KeyDir), natsauth.RoleAdmin)
		if _, err := os.Stat(seed); err == nil {
			c.NKeyFile = seed
		}
	}
	return c.Options()
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
