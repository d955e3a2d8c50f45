package contract

import (
	"bytes"
	"crypto/cipher"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// minKeyLen is the least number of bytes a contract key may have.
const minKeyLen = 16

// keys are a compiled contract's secrets.
type keys struct {
	hash []byte       // the HMAC key of hash: the contract's key
	hmac *hmacKey     // what hash's hashers need of it
	tok  cipher.Block // the AES-256 cipher of tokenize
}

// Contract is a Spec ready to transform rows: its key read. It is
// immutable and may be shared; what it makes (a Writer, a stream's
// tables) is used by one goroutine.
type Contract struct {
	spec *Spec
	keys *keys
	// dataset is the contract of a load's rows (Spec.Columns); tables
	// those of a stream's tables (Spec.Tables).
	dataset *rules
	tables  map[string]*rules
}

// rules is the contract of one dataset or table.
type rules struct {
	// what names it in errors: "the rows" or "table public.users";
	// field is where a column of it is classified in a spec
	// ("contract.columns", "contract.tables.public.users.columns").
	what, field string
	strict      bool
	cols        map[string]Column
	filter      []Condition
}

// Compile makes a Contract of s, reading its key with lookup (the process
// environment: os.LookupEnv) or from its key_file. A key is read only when
// an action needs it. nil is no contract: nil without an error. Errors
// name the variable or the file, never the key.
func Compile(s *Spec, lookup func(string) (string, bool)) (*Contract, error) {
	if s == nil {
		return nil, nil
	}
	if ps := s.Validate(); len(ps) > 0 {
		return nil, &Error{Problems: ps}
	}
	c := &Contract{spec: s, keys: &keys{}, tables: map[string]*rules{}}
	if s.needsKey() {
		key, err := readKey(s, lookup)
		if err != nil {
			return nil, err
		}
		c.keys.hash, c.keys.hmac = key, newHMACKey(key)
		if c.keys.tok, err = newTokenBlock(key); err != nil {
			return nil, fmt.Errorf("contract key: %w", err)
		}
	}
	if len(s.Columns) > 0 {
		c.dataset = &rules{what: "the rows", field: s.where("columns"), strict: s.Strict, cols: s.Columns, filter: s.Filter}
	}
	for name, t := range s.Tables {
		c.tables[name] = &rules{what: "table " + name, field: s.where("tables." + name + ".columns"), strict: s.Strict, cols: t.Columns, filter: t.Filter}
	}
	return c, nil
}

// Open decodes a contract from its JSON form (Decode) and compiles it with
// the process environment. Empty JSON is no contract: nil without an
// error.
func Open(raw json.RawMessage) (*Contract, error) {
	s, err := Decode(raw)
	if err != nil || s == nil {
		return nil, err
	}
	return Compile(s, os.LookupEnv)
}

func readKey(s *Spec, lookup func(string) (string, bool)) ([]byte, error) {
	var key []byte
	var from string
	if s.KeyFile != "" {
		b, err := os.ReadFile(s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("contract key_file: %w", err)
		}
		key, from = bytes.TrimRight(b, "\r\n"), "key_file "+s.KeyFile
	} else {
		name := strings.TrimSuffix(strings.TrimPrefix(s.Key, "${"), "}")
		v, ok := lookup(name)
		if !ok {
			return nil, fmt.Errorf("contract key: environment variable %s is not set in the environment of this process (pid %d), which transforms the rows: set it where the workers run", name, os.Getpid())
		}
		key, from = []byte(v), "${"+name+"}"
	}
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("contract key: %s holds %d bytes; want at least %d (such as 32 random bytes in hex: openssl rand -hex 32)", from, len(key), minKeyLen)
	}
	return key, nil
}

// where names a field of s as a user finds it: in the spec's contract, or
// in the contract file the spec names (File), where the contract's fields
// are at the top.
func (s *Spec) where(field string) string {
	if s.File != "" {
		return field + " of contract file " + s.File
	}
	return "contract." + field
}

// Spec returns the contract's spec.
func (c *Contract) Spec() *Spec { return c.spec }

// Strict reports whether the contract fails closed.
func (c *Contract) Strict() bool { return c.spec.Strict }

// table returns the rules of a stream's table ("schema.table"): its entry
// in Tables, or, for a table the contract does not name, rules that
// classify nothing (so every column is unclassified).
func (c *Contract) table(name string) *rules {
	if r, ok := c.tables[name]; ok {
		return r
	}
	return &rules{what: "table " + name, field: c.spec.where("tables." + name + ".columns"), strict: c.spec.Strict}
}

// column returns the action of a column of r: its classification, or
// keep for an unclassified column of a contract that is not strict. A
// strict contract refuses an unclassified column with an error naming it.
func (r *rules) column(k *keys, name string) (*colFn, error) {
	col, ok := r.cols[name]
	if !ok {
		if r.strict {
			return nil, r.unclassified(name)
		}
		col = Column{Action: Keep}
	}
	return k.newColFn(name, col), nil
}

func (r *rules) unclassified(name string) error {
	return fmt.Errorf("column %q of %s is %w (strict: true): classify it under %s (%s: keep, drop, hash, mask, null, truncate or tokenize) and apply the spec again; nothing of it was copied",
		name, r.what, errUnclassified, r.field, name)
}

// passes reports whether r keeps everything as it is: no filter and no
// column it classifies with another action than keep, so rows of any
// columns pass unchanged when r is not strict.
func (r *rules) passes() bool {
	if r.strict || len(r.filter) > 0 {
		return false
	}
	for _, c := range r.cols {
		if c.Action != Keep {
			return false
		}
	}
	return true
}
