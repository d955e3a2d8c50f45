package clickhouse

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/sluicehq/sluice/connectors"
)

// Kind is the connector kind this package registers.
const Kind = "clickhouse"

// DefaultKeepVersions is how many versions a full load keeps, the exposed
// one included, when keep_versions is 0.
const DefaultKeepVersions = 3

// Values of SinkConfig.NullArrays.
const (
	NullArraysRefuse = "refuse"
	NullArraysEmpty  = "empty"
)

// SinkConfig configures a ClickHouse sink.
type SinkConfig struct {
	// URL is the server's HTTP interface, http://[user[:password]@]host:port
	// (8123 by default on a server). It may hold `${ENV}` references; its
	// password is never logged or shown in errors.
	URL string `json:"url"`
	// Table is "database.table" or "table" (in database "default"): the
	// table readers query. Letters, digits and '_' only, at most 100
	// bytes (the sink adds suffixes to it).
	Table string `json:"table"`
	// KeepVersions is how many versions of a full load stay for rollback,
	// the exposed one included; 0 means 3.
	KeepVersions int `json:"keep_versions,omitempty"`
	// NullArrays says what to do with a source array column that may be
	// NULL, which a ClickHouse array cannot be: "refuse" (the default:
	// the run fails at plan time, naming the column) or "empty" (a NULL
	// array is stored as []).
	NullArrays string `json:"null_arrays,omitempty"`
	// Settings are ClickHouse settings sent with every request, such as
	// {"max_insert_block_size": "1048576"}.
	Settings map[string]string `json:"settings,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// maxName bounds the table name, so that the names derived from it stay
// well within a file name.
const maxName = 100

// Validate checks the configuration without I/O.
func (c SinkConfig) Validate() error {
	if err := validateURL(c.URL); err != nil {
		return err
	}
	if _, _, err := splitTable(c.Table); err != nil {
		return err
	}
	if c.KeepVersions < 0 {
		return &connectors.FieldError{Field: "keep_versions", Msg: "must be at least 1 (0 means 3)"}
	}
	switch c.NullArrays {
	case "", NullArraysRefuse, NullArraysEmpty:
	default:
		return &connectors.FieldError{Field: "null_arrays", Msg: fmt.Sprintf("%q is not %s or %s", c.NullArrays, NullArraysRefuse, NullArraysEmpty)}
	}
	return validateSettings(c.Settings)
}

// validateURL checks the url of a configuration: the server's HTTP
// interface.
func validateURL(addr string) error {
	if strings.TrimSpace(addr) == "" {
		return &connectors.FieldError{Field: "url", Msg: "url is required (http://host:8123)"}
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &connectors.FieldError{Field: "url", Msg: fmt.Sprintf("want http://[user[:password]@]host:port, not %s", redactURL(addr))}
	}
	return nil
}

func validateSettings(settings map[string]string) error {
	for k := range settings {
		if !nameRE.MatchString(k) {
			return &connectors.FieldError{Field: "settings." + k, Msg: "not a setting name"}
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

// splitTable splits "db.table" or "table".
func splitTable(s string) (db, name string, err error) {
	if s == "" {
		return "", "", &connectors.FieldError{Field: "table", Msg: "table is required"}
	}
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return "", "", &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("want table or database.table, not %q", s)}
	}
	for _, p := range parts {
		if !nameRE.MatchString(p) {
			return "", "", &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("%q: names are letters, digits and '_'", p)}
		}
	}
	name = parts[len(parts)-1]
	if len(name) > maxName {
		return "", "", &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("%q is longer than %d bytes", name, maxName)}
	}
	if strings.Contains(name, "__") || strings.HasPrefix(name, "sluice_") {
		return "", "", &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("%q: names with '__' or starting with sluice_ are the sink's own", name)}
	}
	db = "default"
	if len(parts) == 2 {
		db = parts[0]
	}
	return db, name, nil
}

// ParseSinkConfig decodes and validates a sink configuration.
func ParseSinkConfig(config json.RawMessage) (SinkConfig, error) {
	var c SinkConfig
	if err := connectors.DecodeConfig(config, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ValidateSink checks a sink configuration without I/O.
func ValidateSink(config json.RawMessage) error {
	_, err := ParseSinkConfig(config)
	return err
}

// Register adds the "clickhouse" connector to reg: the sink of full loads
// and incremental windows, and the Applier of cdc_apply pipelines
// (CDCTarget).
func Register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{Kind: Kind, Sink: openSink, ValidateSink: ValidateSink, SinkMerges: true,
		CDCTarget: &connectors.CDCTarget{Validate: ValidateApplier, Open: openApplier}})
}
