package natsauth

import (
	"fmt"
	"strconv"
	"strings"
)

// Account is the NATS account every Sluice user belongs to: one account,
// so that all roles share the streams, with JetStream on.
const Account = "SLUICE"

// User is one NATS user of the cluster: a role and how it authenticates,
// by an nkey (NKey, its public key) or by a password (Name, Password).
// A password may be a bcrypt hash (nats-server accepts "$2a$..." as
// one).
type User struct {
	Role     Role
	NKey     string
	Name     string
	Password string
}

// ServerTLS is the server side of TLS: its certificate and key, and the CA
// that signed the clients' certificates. Verify asks every client for a
// certificate signed by CA (mutual TLS).
type ServerTLS struct {
	CertFile, KeyFile, CAFile string
	Verify                    bool
}

// ServerConfig is what ServerConfigText writes.
type ServerConfig struct {
	// Host and Port the server listens on; 0 leaves the port out (4222).
	Host string
	Port int
	// StoreDir holds JetStream's files; empty leaves it out.
	StoreDir string
	Users    []User
	TLS      *ServerTLS
}

// Text returns a nats-server configuration (its own file format) that
// puts Users in the SLUICE account, with JetStream, each with its role's
// permissions.
func (c ServerConfig) Text() string {
	var b strings.Builder
	b.WriteString("# NATS server configuration for a Sluice cluster: one account, SLUICE,\n")
	b.WriteString("# with JetStream; one user per role with the role's permissions\n")
	b.WriteString("# (see the README's Security section).\n")
	if c.Host != "" {
		fmt.Fprintf(&b, "host: %s\n", quote(c.Host))
	}
	if c.Port != 0 {
		fmt.Fprintf(&b, "port: %d\n", c.Port)
	}
	b.WriteString("max_payload: 8MB\n")
	b.WriteString("jetstream {\n")
	if c.StoreDir != "" {
		fmt.Fprintf(&b, "  store_dir: %s\n", quote(c.StoreDir))
	}
	b.WriteString("  max_file_store: 1TB\n}\n")
	if t := c.TLS; t != nil {
		b.WriteString("tls {\n")
		fmt.Fprintf(&b, "  cert_file: %s\n  key_file: %s\n", quote(t.CertFile), quote(t.KeyFile))
		if t.CAFile != "" {
			fmt.Fprintf(&b, "  ca_file: %s\n", quote(t.CAFile))
		}
		if t.Verify {
			b.WriteString("  verify: true\n")
		}
		b.WriteString("}\n")
	}
	fmt.Fprintf(&b, "accounts {\n  %s {\n    jetstream: enabled\n    users: [\n", Account)
	for _, u := range c.Users {
		fmt.Fprintf(&b, "      # %s\n      {", u.Role)
		if u.NKey != "" {
			fmt.Fprintf(&b, "nkey: %s", u.NKey)
		} else {
			fmt.Fprintf(&b, "user: %s, password: %s", quote(u.Name), quote(u.Password))
		}
		b.WriteString(", permissions: ")
		writePermissions(&b, PermissionsOf(u.Role))
		b.WriteString("}\n")
	}
	b.WriteString("    ]\n  }\n}\n")
	return b.String()
}

func writePermissions(b *strings.Builder, p Permissions) {
	b.WriteString("{publish: {allow: ")
	writeList(b, p.PublishAllow)
	if len(p.PublishDeny) > 0 {
		b.WriteString(", deny: ")
		writeList(b, p.PublishDeny)
	}
	b.WriteString("}, subscribe: {allow: ")
	writeList(b, p.SubscribeAllow)
	if len(p.SubscribeDeny) > 0 {
		b.WriteString(", deny: ")
		writeList(b, p.SubscribeDeny)
	}
	b.WriteString("}")
	if p.AllowResponses {
		b.WriteString(", allow_responses: true")
	}
	b.WriteString("}")
}

func writeList(b *strings.Builder, s []string) {
	b.WriteString("[")
	for i, v := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(v))
	}
	b.WriteString("]")
}

// quote writes s as a quoted string of the configuration format, which
// reads "$..." unquoted as a variable.
func quote(s string) string { return strconv.Quote(s) }
