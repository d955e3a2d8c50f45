package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/devcerts"
	"github.com/sluicehq/sluice/natsauth"
	"github.com/sluicehq/sluice/signing"
)

func newSecurityCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "security",
		Short: "make what a secured cluster needs: NATS users per role, a CA and certificates, the cluster's signing key",
	}
	return group(cmd, newNATSConfigCmd(), newClusterKeyCmd(), newCertsCmd())
}

func newCertsCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "certs [--dir DIR] NAME[=HOST,HOST...]...",
		Short: "make a development CA and a certificate per NAME (NATS, Raft, HTTP API: server and client)",
		Long: `Certs makes a development certificate authority in <dir> (ca.crt, ca.key;
kept when it exists) and, for each argument, <dir>/NAME.crt and NAME.key: a
certificate for both ends of a connection naming NAME and the HOSTs (IP
addresses or DNS names) a peer dials. For example:

  sluice security certs nats=127.0.0.1 coord-a=10.0.0.1 coord-b=10.0.0.2 coord-c=10.0.0.3 worker api=127.0.0.1

Use your own CA in production; the CA's key signs every certificate.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, err := devcerts.EnsureCA(dir)
			if err != nil {
				return err
			}
			for _, a := range args {
				name, hosts, _ := strings.Cut(a, "=")
				var hs []string
				if hosts != "" {
					hs = strings.Split(hosts, ",")
				}
				cert, key, err := ca.Issue(dir, name, hs)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", cert, key)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA: %s\n", filepath.Join(dir, devcerts.CACert))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "certs", "`directory` of the CA and the certificates")
	return cmd
}

func newClusterKeyCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "cluster-key [--dir DIR]",
		Short: "make the cluster's ed25519 signing key: cluster.key for coordinators, cluster.pub for workers",
		Long: `Cluster-key makes the key pair the leader signs tasks, stream assignments
and lease grants with: <dir>/cluster.key (private, mode 0600) goes to every
coordinator (--cluster-key), <dir>/cluster.pub to every worker
(--cluster-pub). A worker with the public key refuses, unread, whatever the
private key did not sign; a coordinator with the private key drops results
that do not carry their task's token. An existing key is never replaced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(filepath.Join(dir, signing.PrivateFile)); err == nil {
				return fmt.Errorf("%s exists: remove it first to make a new key", filepath.Join(dir, signing.PrivateFile))
			}
			s, err := signing.Generate()
			if err != nil {
				return err
			}
			if err := s.WriteFiles(dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (coordinators: --cluster-key) and %s (workers: --cluster-pub)\n",
				filepath.Join(dir, signing.PrivateFile), filepath.Join(dir, signing.PublicFile))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "cluster-key", "`directory` to write the key pair into")
	return cmd
}

// natsConfigOptions are the flags of `sluice security nats-config`.
type natsConfigOptions struct {
	keyDir, host, storeDir string
	port                   int
	tlsCert, tlsKey, tlsCA string
	verify                 bool
}

func newNATSConfigCmd() *cobra.Command {
	var o natsConfigOptions
	cmd := &cobra.Command{
		Use:   "nats-config [--keys DIR] > nats.conf",
		Short: "print a nats-server configuration with one user per Sluice role, making their nkeys",
		Long: `Nats-config prints a nats-server configuration for a Sluice cluster: one
account, SLUICE, with JetStream, and one user per role, each with the
role's permissions:

  coordinator  everything but forging the server's advisories
  worker       pull tasks, publish results, heartbeats, lease renewals and
               change events; no task, trigger or other API request
  trigger      publish sluice.trigger.<pipeline> and nothing else
  observer     the read-only API verbs (status, pipelines, ...), run events
  admin        every API verb (apply, run, delete, ...), triggers,
               JetStream's API (the client commands)

Each user authenticates by an nkey: its seed is kept in <keys>/<role>.nk
(made once, mode 0600; an existing one is kept, so that running it again
prints the same users). Give each process its role's seed with --nats-nkey
or $SLUICE_NATS_NKEY. With --tls-cert and --tls-key the server speaks TLS;
with --tls-verify too it requires a client certificate signed by --tls-ca.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runNATSConfig(o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.keyDir, "keys", "nats-keys", "`directory` of the roles' nkey seeds")
	fs.StringVar(&o.host, "host", "", "address the server listens on (default all)")
	fs.IntVar(&o.port, "port", 4222, "client port")
	fs.StringVar(&o.storeDir, "store-dir", "", "JetStream's directory (default the server's)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "the server's certificate `file`")
	fs.StringVar(&o.tlsKey, "tls-key", "", "the server's key `file`")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "CA `file` that signed the clients' certificates")
	fs.BoolVar(&o.verify, "tls-verify", false, "require a client certificate signed by --tls-ca (mutual TLS)")
	return cmd
}

func runNATSConfig(o natsConfigOptions, stdout, stderr io.Writer) error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if o.verify && o.tlsCA == "" {
		return fmt.Errorf("--tls-verify needs --tls-ca")
	}
	users, err := natsauth.EnsureKeys(o.keyDir, natsauth.Roles)
	if err != nil {
		return err
	}
	cfg := natsauth.ServerConfig{Host: o.host, Port: o.port, StoreDir: o.storeDir, Users: users}
	if o.tlsCert != "" {
		cfg.TLS = &natsauth.ServerTLS{CertFile: o.tlsCert, KeyFile: o.tlsKey, CAFile: o.tlsCA, Verify: o.verify}
	}
	fmt.Fprint(stdout, cfg.Text())
	abs, _ := filepath.Abs(o.keyDir)
	fmt.Fprintf(stderr, "nkey seeds in %s (one per role: give each process its own with --nats-nkey)\n", abs)
	return nil
}
