package iceberg

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Kind is the connector kind this package registers.
const Kind = "iceberg"

// Defaults.
const (
	// DefaultKeepVersions is how many full-load versions (snapshots) a
	// table keeps, the current one included, when keep_versions is 0.
	DefaultKeepVersions = 3
	// DefaultCatalogName names the catalog inside the SQL catalog's tables.
	DefaultCatalogName = "sluice"
	// DefaultTargetFileMB bounds a data file's size before a task starts
	// another one.
	DefaultTargetFileMB = 512
	// DefaultCommitAttempts bounds the commits a run tries when another
	// writer commits to the table first.
	DefaultCommitAttempts = 8
)

// Config says where a table is: its name, its warehouse, its catalog and,
// for a warehouse on S3, how to reach the store. Credentials never appear
// here: S3 takes them from the standard AWS environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE and the shared
// files), a PostgreSQL catalog from its DSN, written as a `${ENV}`
// reference.
type Config struct {
	// Table is "namespace.table" (a namespace of several levels is written
	// with dots: "lake.sales.orders"). The namespace is created when
	// missing.
	Table string `json:"table"`
	// Warehouse is where new tables are created: s3://bucket/prefix, or an
	// absolute directory (a path or a file:// URI).
	Warehouse string `json:"warehouse"`
	// Catalog is the Iceberg catalog: "sqlite:/abs/path.db" (a SQL catalog
	// in a SQLite file; the default for a local warehouse is
	// <warehouse>/catalog.db), "postgres://..." (a SQL catalog in
	// PostgreSQL, which every coordinator and worker of a cluster shares),
	// or "http(s)://..." (a REST catalog).
	Catalog string `json:"catalog,omitempty"`
	// CatalogName is the catalog's name within a SQL catalog's tables
	// ("sluice" by default); a REST catalog ignores it.
	CatalogName string `json:"catalog_name,omitempty"`
	// CatalogToken is a bearer token for a REST catalog; write it as a
	// `${ENV}` reference.
	CatalogToken string `json:"catalog_token,omitempty"`
	// S3 reaches an S3-compatible store.
	S3 S3Config `json:"s3,omitzero"`
}

// S3Config says how to reach S3 or an S3-compatible store. Empty fields
// take the standard AWS environment's values.
type S3Config struct {
	// Endpoint overrides AWS's endpoint (http://127.0.0.1:7070 for a
	// local store); default $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL.
	Endpoint string `json:"endpoint,omitempty"`
	// Region; default $AWS_REGION, then $AWS_DEFAULT_REGION, then the
	// shared config, then us-east-1 when an endpoint is set.
	Region string `json:"region,omitempty"`
	// PathStyle addresses buckets in the path (http://host/bucket/key)
	// rather than the host name; default true when an endpoint is set.
	PathStyle *bool `json:"path_style,omitempty"`
}

// SinkConfig configures an Iceberg sink.
type SinkConfig struct {
	Config
	// KeepVersions is how many full-load versions (the snapshots of
	// full-load runs) stay for rollback and time travel, the current one
	// included; 0 means 3. Older ones are expired after each full-load
	// commit, and the data files only they referenced are deleted.
	KeepVersions int `json:"keep_versions,omitempty"`
	// TargetFileMB bounds a data file; a task writes another file past
	// it. 0 means 512.
	TargetFileMB int `json:"target_file_mb,omitempty"`
	// Compression of the Parquet data files: zstd (the default), snappy,
	// gzip or none.
	Compression string `json:"compression,omitempty"`
	// CommitAttempts bounds how often a commit that another writer beat
	// is reloaded and tried again; 0 means 8.
	CommitAttempts int `json:"commit_attempts,omitempty"`
	// Columns declare the table's columns for a source that does not
	// describe them (CSV or JSONL files): the table is created from them,
	// and rows are converted by them. A source that describes its columns
	// (PostgreSQL) needs none. Each is {name, type, not_null, precision,
	// scale, elem} as in a schema: type bool, int16, int32, int64,
	// float32, float64, decimal, string, json, bytes, date, time,
	// timestamp, timestamptz, uuid or list (elem: {type: ...}).
	Columns []protocol.Column `json:"columns,omitempty"`
}

// The values of SourceConfig.Read.
const (
	ReadSnapshot = "snapshot"
	ReadAppended = "appended"
)

// SourceConfig configures an Iceberg source.
type SourceConfig struct {
	Config
	// Read is "snapshot" (the default: every run reads the whole current
	// snapshot) or "appended" (a run reads the data files appended since
	// the snapshot the previous run reached, the pipeline's watermark; the
	// first run reads the whole snapshot).
	Read string `json:"read,omitempty"`
	// SnapshotID, for Read "snapshot", reads that snapshot instead of the
	// current one.
	SnapshotID int64 `json:"snapshot_id,omitempty"`
	// TargetMB bounds the data a task reads, roughly (whole files); 0
	// means 256.
	TargetMB int `json:"target_mb,omitempty"`
}

var (
	tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)+$`)
)

// Validate checks the configuration without I/O.
func (c Config) Validate() error {
	if c.Table == "" {
		return &connectors.FieldError{Field: "table", Msg: "table is required (namespace.table)"}
	}
	if !tableRE.MatchString(c.Table) {
		return &connectors.FieldError{Field: "table", Msg: fmt.Sprintf("want namespace.table (letters, digits, '_' and '-'), not %q", c.Table)}
	}
	if _, err := c.warehouse(); err != nil {
		return err
	}
	if _, _, err := c.catalog(); err != nil {
		return err
	}
	if c.S3.Endpoint != "" {
		if u, err := url.Parse(c.S3.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &connectors.FieldError{Field: "s3.endpoint", Msg: fmt.Sprintf("want http(s)://host:port, not %q", c.S3.Endpoint)}
		}
	}
	return nil
}

// warehouse returns the warehouse as a location Iceberg understands:
// s3://bucket/prefix, or an absolute local path.
func (c Config) warehouse() (string, error) {
	w := strings.TrimRight(c.Warehouse, "/")
	switch {
	case w == "":
		return "", &connectors.FieldError{Field: "warehouse", Msg: "warehouse is required (s3://bucket/prefix or an absolute directory)"}
	case strings.HasPrefix(w, "s3://") || strings.HasPrefix(w, "s3a://"):
		u, err := url.Parse(w)
		if err != nil || u.Host == "" {
			return "", &connectors.FieldError{Field: "warehouse", Msg: fmt.Sprintf("want s3://bucket/prefix, not %q", c.Warehouse)}
		}
		return "s3://" + u.Host + u.Path, nil
	case strings.HasPrefix(w, "file://"):
		w = strings.TrimPrefix(w, "file://")
	case strings.Contains(w, "://"):
		return "", &connectors.FieldError{Field: "warehouse", Msg: fmt.Sprintf("%q: want s3://bucket/prefix or an absolute directory", c.Warehouse)}
	}
	if !filepath.IsAbs(w) {
		return "", &connectors.FieldError{Field: "warehouse", Msg: fmt.Sprintf("%q: a local warehouse must be an absolute directory", c.Warehouse)}
	}
	return filepath.Clean(w), nil
}

func (c Config) local() bool {
	w, err := c.warehouse()
	return err == nil && !strings.HasPrefix(w, "s3://")
}

// The kinds of catalog.
const (
	catalogSQLite   = "SQLite"
	catalogPostgres = "PostgreSQL"
	catalogREST     = "REST"
)

// catalog returns the catalog's kind and address: a SQLite file's path, a
// PostgreSQL DSN or a REST catalog's URL.
func (c Config) catalog() (kind, addr string, err error) {
	switch cat := c.Catalog; {
	case cat == "":
		if !c.local() {
			return "", "", &connectors.FieldError{Field: "catalog", Msg: "a warehouse on S3 needs a catalog: sqlite:/abs/path.db, postgres://... or http(s)://... (a REST catalog)"}
		}
		w, _ := c.warehouse()
		return catalogSQLite, filepath.Join(w, "catalog.db"), nil
	case strings.HasPrefix(cat, "sqlite:"):
		p := strings.TrimPrefix(strings.TrimPrefix(cat, "sqlite:"), "//")
		if !filepath.IsAbs(p) {
			return "", "", &connectors.FieldError{Field: "catalog", Msg: fmt.Sprintf("%q: want sqlite:/absolute/path.db", cat)}
		}
		return catalogSQLite, filepath.Clean(p), nil
	case strings.HasPrefix(cat, "postgres://") || strings.HasPrefix(cat, "postgresql://"):
		if _, err := url.Parse(cat); err != nil {
			return "", "", &connectors.FieldError{Field: "catalog", Msg: "not a PostgreSQL URL: " + redact(cat)}
		}
		return catalogPostgres, cat, nil
	case strings.HasPrefix(cat, "http://") || strings.HasPrefix(cat, "https://"):
		if u, err := url.Parse(cat); err != nil || u.Host == "" {
			return "", "", &connectors.FieldError{Field: "catalog", Msg: "not a REST catalog URL: " + redact(cat)}
		}
		return catalogREST, cat, nil
	}
	return "", "", &connectors.FieldError{Field: "catalog", Msg: fmt.Sprintf("%s: want sqlite:/abs/path.db, postgres://... or http(s)://...", redact(c.Catalog))}
}

// redact hides a URL's password.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a malformed URL)"
	}
	return u.Redacted()
}

// splitTable splits "ns.table" into the namespace levels and the name.
func (c Config) splitTable() ([]string, string) {
	parts := strings.Split(c.Table, ".")
	return parts[:len(parts)-1], parts[len(parts)-1]
}

// s3Props returns the FileIO properties of the S3 settings, filled from
// the environment.
func (c Config) s3Props() map[string]string {
	props := map[string]string{}
	endpoint := c.S3.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_S3")
	}
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL")
	}
	region := c.S3.Region
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if region == "" && endpoint != "" {
		region = "us-east-1"
	}
	if endpoint != "" {
		props["s3.endpoint"] = endpoint
	}
	if region != "" {
		props["s3.region"] = region
	}
	pathStyle := endpoint != ""
	if c.S3.PathStyle != nil {
		pathStyle = *c.S3.PathStyle
	}
	props["s3.force-virtual-addressing"] = fmt.Sprint(!pathStyle)
	return props
}

// Validate checks a sink configuration without I/O.
func (c SinkConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	switch {
	case c.KeepVersions < 0:
		return &connectors.FieldError{Field: "keep_versions", Msg: "must be at least 1 (0 means 3)"}
	case c.TargetFileMB < 0:
		return &connectors.FieldError{Field: "target_file_mb", Msg: "must be positive (0 means 512)"}
	case c.CommitAttempts < 0:
		return &connectors.FieldError{Field: "commit_attempts", Msg: "must be positive (0 means 8)"}
	}
	switch c.Compression {
	case "", "zstd", "snappy", "gzip", "none":
	default:
		return &connectors.FieldError{Field: "compression", Msg: fmt.Sprintf("%q is not zstd, snappy, gzip or none", c.Compression)}
	}
	if sc := c.schema(); sc != nil {
		if err := sc.Validate(); err != nil {
			return &connectors.FieldError{Field: "columns", Msg: err.Error()}
		}
		if _, err := newSchema(sc); err != nil {
			return &connectors.FieldError{Field: "columns", Msg: err.Error()}
		}
	}
	return nil
}

// schema returns the declared columns as a schema; nil without any.
func (c SinkConfig) schema() *protocol.Schema {
	if len(c.Columns) == 0 {
		return nil
	}
	return &protocol.Schema{Columns: c.Columns}
}

func (c SinkConfig) keepVersions() int {
	if c.KeepVersions == 0 {
		return DefaultKeepVersions
	}
	return c.KeepVersions
}

func (c SinkConfig) targetFileBytes() int64 {
	if c.TargetFileMB == 0 {
		return DefaultTargetFileMB << 20
	}
	return int64(c.TargetFileMB) << 20
}

func (c SinkConfig) commitAttempts() int {
	if c.CommitAttempts == 0 {
		return DefaultCommitAttempts
	}
	return c.CommitAttempts
}

// Validate checks a source configuration without I/O.
func (c SourceConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	switch c.Read {
	case "", ReadSnapshot, ReadAppended:
	default:
		return &connectors.FieldError{Field: "read", Msg: fmt.Sprintf("%q is not %s or %s", c.Read, ReadSnapshot, ReadAppended)}
	}
	if c.SnapshotID != 0 && c.Read == ReadAppended {
		return &connectors.FieldError{Field: "snapshot_id", Msg: "snapshot_id reads one snapshot: it does not go with read: appended"}
	}
	if c.TargetMB < 0 {
		return &connectors.FieldError{Field: "target_mb", Msg: "must be positive (0 means 256)"}
	}
	return nil
}

func (c SourceConfig) targetBytes() int64 {
	if c.TargetMB == 0 {
		return 256 << 20
	}
	return int64(c.TargetMB) << 20
}

// ParseSinkConfig decodes and validates a sink configuration.
func ParseSinkConfig(config json.RawMessage) (SinkConfig, error) {
	var c SinkConfig
	if err := decodeConfig(config, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// s3Fields are the keys an s3 mapping may hold.
var s3Fields = []string{"endpoint", "path_style", "region"}

// decodeConfig decodes a configuration, refusing unknown fields; an
// unknown key under s3 (a credential, say) is named with its path and
// told where credentials come from.
func decodeConfig(config json.RawMessage, v any) error {
	var top struct {
		S3 map[string]json.RawMessage `json:"s3"`
	}
	if json.Unmarshal(config, &top) == nil {
		keys := slices.Sorted(maps.Keys(top.S3))
		for _, k := range keys {
			if !slices.Contains(s3Fields, k) {
				return &connectors.FieldError{Field: "s3." + k, Msg: fmt.Sprintf("unknown field (known: %s; credentials come from the AWS environment, never from a spec)", strings.Join(s3Fields, ", "))}
			}
		}
	}
	return connectors.DecodeConfig(config, v)
}

// ParseSourceConfig decodes and validates a source configuration.
func ParseSourceConfig(config json.RawMessage) (SourceConfig, error) {
	var c SourceConfig
	if err := decodeConfig(config, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Register adds the "iceberg" connector (a source and a sink) to reg.
func Register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{
		Kind:   Kind,
		Paths:  connectors.PathFields("warehouse", "catalog"),
		Source: openSource,
		Sink:   openSink,
		ValidateSource: func(config json.RawMessage) error {
			_, err := ParseSourceConfig(config)
			return err
		},
		ValidateSink: func(config json.RawMessage) error {
			_, err := ParseSinkConfig(config)
			return err
		},
		ValidateDataset:  validateDataset,
		SourceSnapshots:  true,
		SinkMerges:       true,
		SinkValueWindows: true,
		SinkAppends:      true,
		Positions:        &connectors.Positions{Check: checkByPosition, Only: appendedOnly},
	})
}

// checkByPosition accepts a source read by position (incremental.by)
// only with read: appended: its position is the snapshot the previous run
// reached, and each run reads the data files appended since; a run of
// read: snapshot would read the whole table again every time. It reads
// only that field: the rest may hold ${ENV} references, not expanded here.
func checkByPosition(config json.RawMessage) error {
	var c struct {
		Read string `json:"read"`
	}
	if err := json.Unmarshal(config, &c); err == nil && c.Read != ReadAppended {
		return errors.New("an iceberg source read by position reads the data files appended since the previous run: set read: appended")
	}
	return nil
}

// appendedOnly refuses read: appended outside a pipeline read by
// position: only such a pipeline keeps the snapshot the previous run
// reached. In a full load the second run would read only the files
// appended since the first and replace the target with them; windows
// keep a time, not a snapshot. It reads only that field.
func appendedOnly(config json.RawMessage) *connectors.FieldError {
	var c struct {
		Read string `json:"read"`
	}
	if err := json.Unmarshal(config, &c); err != nil || c.Read != ReadAppended {
		return nil
	}
	return &connectors.FieldError{Field: "read", Msg: "appended reads the data files appended since the previous run, which only a pipeline read by position keeps (pattern incremental with incremental: {by: position}); a full load or a window reads the whole snapshot: leave read out"}
}
