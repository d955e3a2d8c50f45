package natsauth

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"
)

// SeedFile is the name of a role's nkey seed file in a key directory.
func SeedFile(dir string, role Role) string { return filepath.Join(dir, string(role)+".nk") }

// EnsureKeys returns a user of each role authenticated by an nkey, its
// seed in dir/<role>.nk: read when the file exists, made (mode 0600)
// when not.
func EnsureKeys(dir string, roles []Role) ([]User, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nkey directory: %w", err)
	}
	users := make([]User, 0, len(roles))
	for _, r := range roles {
		path := SeedFile(dir, r)
		seed, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			kp, kerr := nkeys.CreateUser()
			if kerr != nil {
				return nil, fmt.Errorf("create the %s nkey: %w", r, kerr)
			}
			if seed, kerr = kp.Seed(); kerr != nil {
				return nil, fmt.Errorf("create the %s nkey: %w", r, kerr)
			}
			if kerr = os.WriteFile(path, append(seed, '\n'), 0o600); kerr != nil {
				return nil, fmt.Errorf("write the %s nkey: %w", r, kerr)
			}
		} else if err != nil {
			return nil, fmt.Errorf("read the %s nkey: %w", r, err)
		}
		kp, err := nkeys.FromSeed(trimSeed(seed))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		users = append(users, User{Role: r, NKey: pub})
	}
	return users, nil
}

func trimSeed(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
