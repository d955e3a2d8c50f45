package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors"
)

// Kind is the connector kind this package registers.
const Kind = "postgres"

// Defaults.
const (
	DefaultTargetRows   = 250_000
	DefaultKeepVersions = 3
	// DefaultSnapshotTimeout bounds how long a planned run may hold its
	// exported snapshot open on the source.
	DefaultSnapshotTimeout = 12 * time.Hour
	// batchBytes is the size a Raw batch of CSV records aims at.
	batchBytes = 1 << 20
	// maxBaseName bounds the table name of a sink, so that the names derived
	// from it (<table>__stg_<12 hex>, <table>_v<N>) fit PostgreSQL's 63-byte
	// identifiers.
	maxBaseName = 40
)

// Snapshot modes of a source.
const (
	// SnapshotExport makes every chunk of a run read the snapshot the
	// leader exported when it planned the run (the default).
	SnapshotExport = "export"
	// SnapshotNone makes every chunk read the database as it is when the
	// chunk is read: chunks of one run may then see different states.
	SnapshotNone = "none"
)

// SourceConfig configures a PostgreSQL source.
type SourceConfig struct {
	// DSN is a libpq connection string or URL. It may hold `${ENV}`
	// references (expanded before the source opens); it is never logged,
	// and errors show it with the password redacted.
	DSN string `json:"dsn"`
	// Table is the table to read: "name" or "schema.name". Each part is
	// quoted as an identifier, so it is case-sensitive.
	Table string `json:"table"`
	// Columns are the columns to read, in order; empty means every column
	// of the table in table order.
	Columns []string `json:"columns,omitempty"`
	// Where is an SQL filter added to every chunk's query (AND-ed with the
	// chunk bounds). It is trusted SQL from the pipeline's author.
	Where string `json:"where,omitempty"`
	// Key is an integer column to split the table on. Empty means block
	// (ctid) ranges for a full load on an exported snapshot from
	// PostgreSQL 14 on (TID Range Scans, cheaper than index range scans);
	// otherwise (snapshot "none", an incremental window, an older server)
	// the primary key when it is a single integer column, and block ranges
	// when there is none.
	Key string `json:"key,omitempty"`
	// Format is the format of the rows read: "csv" (the default, and the
	// only one so far).
	Format string `json:"format,omitempty"`
	// Snapshot is "export" (the default) or "none"; see SnapshotExport.
	Snapshot string `json:"snapshot,omitempty"`
	// SnapshotTimeout is the longest a run may hold its snapshot, as a Go
	// duration ("12h" by default); the server ends the holding session
	// after it, and chunks read later fail and ask for a new plan.
	SnapshotTimeout string `json:"snapshot_timeout,omitempty"`
}

// ColumnDef defines one column of the versioned tables a sink creates.
type ColumnDef struct {
	Name string `json:"name"`
	// Type is an SQL type, such as "numeric(20,6)" or "text[]".
	Type string `json:"type"`
}

// SinkConfig configures a PostgreSQL sink (Full Loader exposition).
type SinkConfig struct {
	// DSN is as for the source.
	DSN string `json:"dsn"`
	// Table is the view readers query, "name" or "schema.name"; each run
	// loads the table <Table>_v<N> behind it. The name part may be at
	// most 40 bytes long.
	Table string `json:"table"`
	// KeepVersions is how many committed versions stay for rollback,
	// the exposed one included; 0 means 3.
	KeepVersions int `json:"keep_versions,omitempty"`
	// Columns define the versioned tables' columns. When empty, the
	// definition of the table <Table>_template is copied if it exists, and
	// otherwise every column of the first batch becomes a text column.
	Columns []ColumnDef `json:"columns,omitempty"`
}

func (c SourceConfig) snapshotTimeout() time.Duration {
	if c.SnapshotTimeout == "" {
		return DefaultSnapshotTimeout
	}
	d, _ := time.ParseDuration(c.SnapshotTimeout)
	return d
}

// Validate checks the configuration without I/O.
func (c SourceConfig) Validate() error {
	if err := validateDSN(c.DSN); err != nil {
		return err
	}
	if _, err := parseTable(c.Table, "table", 0); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, col := range c.Columns {
		f := fmt.Sprintf("columns[%d]", i)
		if err := checkName(col, f); err != nil {
			return err
		}
		if seen[col] {
			return &connectors.FieldError{Field: f, Msg: fmt.Sprintf("column %q is listed twice", col)}
		}
		seen[col] = true
	}
	if strings.Contains(c.Where, ";") {
		return &connectors.FieldError{Field: "where", Msg: "a filter must be one SQL expression, without ';'"}
	}
	if c.Key != "" {
		if err := checkName(c.Key, "key"); err != nil {
			return err
		}
	}
	switch c.Format {
	case "", "csv":
	case "text", "binary":
		return &connectors.FieldError{Field: "format", Msg: fmt.Sprintf("format %q is not supported yet (use csv)", c.Format)}
	default:
		return &connectors.FieldError{Field: "format", Msg: fmt.Sprintf("unknown format %q (want csv)", c.Format)}
	}
	switch c.Snapshot {
	case "", SnapshotExport, SnapshotNone:
	default:
		return &connectors.FieldError{Field: "snapshot", Msg: fmt.Sprintf("unknown snapshot mode %q (want %s or %s)", c.Snapshot, SnapshotExport, SnapshotNone)}
	}
	if c.SnapshotTimeout != "" {
		d, err := time.ParseDuration(c.SnapshotTimeout)
		if err != nil || d < time.Second {
			return &connectors.FieldError{Field: "snapshot_timeout", Msg: fmt.Sprintf("want a duration of at least 1s, such as \"12h\", not %q", c.SnapshotTimeout)}
		}
	}
	return nil
}

func (c SinkConfig) keepVersions() int {
	if c.KeepVersions == 0 {
		return DefaultKeepVersions
	}
	return c.KeepVersions
}

// Validate checks the configuration without I/O.
func (c SinkConfig) Validate() error {
	if err := validateDSN(c.DSN); err != nil {
		return err
	}
	if _, err := parseTable(c.Table, "table", maxBaseName); err != nil {
		return err
	}
	if c.KeepVersions < 0 {
		return &connectors.FieldError{Field: "keep_versions", Msg: "must be at least 1 (0 means 3)"}
	}
	seen := map[string]bool{}
	for i, col := range c.Columns {
		f := fmt.Sprintf("columns[%d]", i)
		if err := checkName(col.Name, f+".name"); err != nil {
			return err
		}
		if col.Name == stagingTaskColumn {
			return &connectors.FieldError{Field: f + ".name", Msg: fmt.Sprintf("%q is reserved", col.Name)}
		}
		if seen[col.Name] {
			return &connectors.FieldError{Field: f + ".name", Msg: fmt.Sprintf("column %q is defined twice", col.Name)}
		}
		seen[col.Name] = true
		if strings.TrimSpace(col.Type) == "" {
			return &connectors.FieldError{Field: f + ".type", Msg: "type is required"}
		}
		if strings.ContainsAny(col.Type, ";") || strings.Contains(col.Type, "--") || strings.Contains(col.Type, "/*") {
			return &connectors.FieldError{Field: f + ".type", Msg: fmt.Sprintf("%q is not a type", col.Type)}
		}
	}
	return nil
}

func validateDSN(dsn string) error {
	if strings.TrimSpace(dsn) == "" {
		return &connectors.FieldError{Field: "dsn", Msg: "dsn is required"}
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if _, err := url.Parse(dsn); err != nil {
			return &connectors.FieldError{Field: "dsn", Msg: fmt.Sprintf("not a valid URL: %s", RedactDSN(dsn))}
		}
		return nil
	}
	if !strings.Contains(dsn, "=") {
		return &connectors.FieldError{Field: "dsn", Msg: "want a postgres:// URL or key=value settings"}
	}
	return nil
}

func checkName(name, field string) error {
	switch {
	case name == "":
		return &connectors.FieldError{Field: field, Msg: "name is empty"}
	case len(name) > 63:
		return &connectors.FieldError{Field: field, Msg: fmt.Sprintf("name %q is longer than 63 bytes", name)}
	case strings.ContainsRune(name, 0):
		return &connectors.FieldError{Field: field, Msg: "name holds a NUL byte"}
	}
	return nil
}

// parseTable splits "schema.name" or "name" into identifier parts. maxName,
// when not zero, bounds the length of the name part.
func parseTable(s, field string, maxName int) (pgx.Identifier, error) {
	if s == "" {
		return nil, &connectors.FieldError{Field: field, Msg: "table is required"}
	}
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return nil, &connectors.FieldError{Field: field, Msg: fmt.Sprintf("want name or schema.name, not %q", s)}
	}
	for _, p := range parts {
		if err := checkName(p, field); err != nil {
			return nil, err
		}
	}
	if maxName > 0 && len(parts[len(parts)-1]) > maxName {
		return nil, &connectors.FieldError{Field: field, Msg: fmt.Sprintf("name %q is longer than %d bytes (the versioned tables add suffixes to it)", parts[len(parts)-1], maxName)}
	}
	return pgx.Identifier(parts), nil
}

// decodeStrict decodes a JSON configuration, rejecting unknown fields.
func decodeStrict(config json.RawMessage, v any) error {
	if len(bytes.TrimSpace(config)) == 0 {
		config = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		field := ""
		if m := unknownFieldRE.FindStringSubmatch(err.Error()); m != nil {
			field = m[1]
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return connectors.TypeError(te)
		}
		return &connectors.FieldError{Field: field, Msg: err.Error()}
	}
	return nil
}

var unknownFieldRE = regexp.MustCompile(`unknown field "([^"]*)"`)

// ParseSourceConfig decodes and validates a source configuration.
func ParseSourceConfig(config json.RawMessage) (SourceConfig, error) {
	var c SourceConfig
	if err := decodeStrict(config, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ParseSinkConfig decodes and validates a sink configuration.
func ParseSinkConfig(config json.RawMessage) (SinkConfig, error) {
	var c SinkConfig
	if err := decodeStrict(config, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

var kvPasswordRE = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactDSN returns dsn with its password replaced by "xxxxx", for
// messages.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparsable URL)"
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return kvPasswordRE.ReplaceAllString(dsn, "${1}xxxxx")
}

// sessionParams fix the settings that change how values are rendered as
// text, so that every session of this package (source reads, sink loads,
// TableChecksum) writes and reads values the same way whatever the server's
// defaults are.
var sessionParams = map[string]string{
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "1",
	"bytea_output":       "hex",
	"client_encoding":    "UTF8",
	"application_name":   "sluice",
}

// connect opens one connection with the package's session settings. Errors
// never show the DSN's password.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	return connectConfig(ctx, dsn, nil)
}

func connectConfig(ctx context.Context, dsn string, adjust func(*pgx.ConnConfig)) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx redacts what it recognizes only; say nothing of the input.
		return nil, connectors.Permanent(fmt.Errorf("parse dsn %s: invalid connection string", RedactDSN(dsn)))
	}
	for k, v := range sessionParams {
		if _, set := cfg.RuntimeParams[k]; !set || k != "application_name" {
			cfg.RuntimeParams[k] = v
		}
	}
	if adjust != nil {
		adjust(cfg)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", RedactDSN(dsn), err)
	}
	return conn, nil
}
