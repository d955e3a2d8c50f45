package kafka

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Kind is the connector kind this package registers.
const Kind = "kafka"

// Defaults.
const (
	// DefaultAuthEnv prefixes the environment variables that hold a
	// cluster's SASL and TLS settings when the configuration names none.
	DefaultAuthEnv = "SLUICE_KAFKA"
	// DefaultRecordsPerTask bounds the offsets one task reads.
	DefaultRecordsPerTask = 250_000
	// DefaultMaxRecordsPerRun bounds the offsets one run by position
	// reads, over all partitions.
	DefaultMaxRecordsPerRun = 5_000_000
	// DefaultStagingPartitions is the partition count of a staging topic
	// the sink creates.
	DefaultStagingPartitions = 6
	// DefaultTransactionTimeout bounds a commit's transaction.
	DefaultTransactionTimeout = 5 * time.Minute
	// DefaultStagingRetention is how long a staging topic the sink creates
	// keeps records.
	DefaultStagingRetention = 7 * 24 * time.Hour
)

// Cluster says how to reach a Kafka cluster. Credentials never sit in a
// spec: SASL and TLS settings come from the environment of the process
// that opens the connector, from the variables AuthEnv prefixes (see
// Auth).
type Cluster struct {
	// Brokers are the seed brokers, host:port; empty means the
	// comma-separated list in <AuthEnv>_BROKERS.
	Brokers []string `json:"brokers,omitempty"`
	// AuthEnv prefixes the environment variables of the cluster's SASL
	// and TLS settings; empty means SLUICE_KAFKA.
	AuthEnv string `json:"auth_env,omitempty"`
	// ClientID names the client to the brokers; empty means sluice.
	ClientID string `json:"client_id,omitempty"`
}

// Validate checks the configuration without I/O.
func (c Cluster) Validate() error {
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" || strings.ContainsAny(b, " /") {
			return &connectors.FieldError{Field: fmt.Sprintf("brokers[%d]", i), Msg: fmt.Sprintf("%q is not host:port", b)}
		}
	}
	if c.AuthEnv != "" && !envNameRE(c.AuthEnv) {
		return &connectors.FieldError{Field: "auth_env", Msg: fmt.Sprintf("%q is not the prefix of environment variable names (letters, digits and '_')", c.AuthEnv)}
	}
	if c.AuthEnv != "" && !strings.HasPrefix(c.AuthEnv, "SLUICE_") {
		// The spec names the prefix: any other would let it hand another
		// service's password (say AWS_..._PASSWORD) to brokers it names.
		return &connectors.FieldError{Field: "auth_env", Msg: fmt.Sprintf("%q must start with SLUICE_: a spec reaches only the SLUICE_ variables of a process (say SLUICE_KAFKA_EU)", c.AuthEnv)}
	}
	return nil
}

func envNameRE(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

func (c Cluster) authEnv() string {
	if c.AuthEnv == "" {
		return DefaultAuthEnv
	}
	return c.AuthEnv
}

// The values of SourceConfig.Format.
const (
	// FormatJSON: each record's value is a JSON object, and that object is
	// the row.
	FormatJSON = "json"
	// FormatRecord: each record is a row of the columns RecordColumns
	// names: topic, partition, offset, timestamp, key, value, headers.
	FormatRecord = "record"
)

// The values of SourceConfig.Encoding.
const (
	EncodingText   = "text"
	EncodingBase64 = "base64"
)

// The values of SourceConfig.Isolation.
const (
	ReadCommitted   = "read_committed"
	ReadUncommitted = "read_uncommitted"
)

// SourceConfig configures a Kafka source.
type SourceConfig struct {
	Cluster
	// Topic is the topic to read.
	Topic string `json:"topic"`
	// Format is json (the default: each value a JSON object, the row) or
	// record (a row per record with its topic, partition, offset,
	// timestamp, key, value and headers).
	Format string `json:"format,omitempty"`
	// Metadata, with format json, adds the record's _topic, _partition,
	// _offset, _timestamp and _key before the value's fields.
	Metadata bool `json:"metadata,omitempty"`
	// Encoding says how format record writes keys, values and header
	// values: text (the default; bytes that are not UTF-8 fail the task,
	// naming the record) or base64.
	Encoding string `json:"encoding,omitempty"`
	// Columns declare the columns of the values of format json, for sinks
	// that need types (as in an Iceberg sink's columns); format record has
	// its own.
	Columns []protocol.Column `json:"columns,omitempty"`
	// Isolation is read_committed (the default: records of aborted
	// transactions are skipped, and a plan reads up to the last stable
	// offset) or read_uncommitted.
	Isolation string `json:"isolation,omitempty"`
	// Start is where a full load, or the first run by position, starts in
	// each partition: earliest (the default), latest, or an RFC 3339 time
	// (the first record at or after it).
	Start string `json:"start,omitempty"`
	// RecordsPerTask bounds the offsets one task reads; 0 means the
	// pipeline's partitioning.target_rows, or 250,000.
	RecordsPerTask int64 `json:"records_per_task,omitempty"`
	// MaxRecordsPerRun bounds the offsets one run by position reads, over
	// all partitions; 0 means 5,000,000. The rest waits for the next run.
	MaxRecordsPerRun int64 `json:"max_records_per_run,omitempty"`
	// SkipLost lets a run by position go on past records that retention
	// deleted before a run read them (the watermark is before the
	// partition's first offset): the gap is logged and skipped. Without it
	// such a run fails, naming the partition and the records lost.
	SkipLost bool `json:"skip_lost,omitempty"`
}

// Validate checks the configuration without I/O.
func (c SourceConfig) Validate() error {
	if err := c.Cluster.Validate(); err != nil {
		return err
	}
	if err := checkTopic("topic", c.Topic); err != nil {
		return err
	}
	switch c.Format {
	case "", FormatJSON:
		if sc := c.declared(); sc != nil {
			if err := sc.Validate(); err != nil {
				return &connectors.FieldError{Field: "columns", Msg: err.Error()}
			}
		}
	case FormatRecord:
		if len(c.Columns) > 0 {
			return &connectors.FieldError{Field: "columns", Msg: "format record has its own columns (topic, partition, offset, timestamp, key, value, headers)"}
		}
		if c.Metadata {
			return &connectors.FieldError{Field: "metadata", Msg: "is for format json: format record carries the record's metadata in its own columns"}
		}
	default:
		return &connectors.FieldError{Field: "format", Msg: fmt.Sprintf("unknown format %q (want json or record)", c.Format)}
	}
	switch c.Encoding {
	case "", EncodingText, EncodingBase64:
	default:
		return &connectors.FieldError{Field: "encoding", Msg: fmt.Sprintf("unknown encoding %q (want text or base64)", c.Encoding)}
	}
	if c.Encoding != "" && c.format() != FormatRecord {
		return &connectors.FieldError{Field: "encoding", Msg: "is for format record"}
	}
	switch c.Isolation {
	case "", ReadCommitted, ReadUncommitted:
	default:
		return &connectors.FieldError{Field: "isolation", Msg: fmt.Sprintf("unknown isolation %q (want read_committed or read_uncommitted)", c.Isolation)}
	}
	if _, err := parseStart(c.Start); err != nil {
		return &connectors.FieldError{Field: "start", Msg: err.Error()}
	}
	switch {
	case c.RecordsPerTask < 0:
		return &connectors.FieldError{Field: "records_per_task", Msg: "must be positive"}
	case c.MaxRecordsPerRun < 0:
		return &connectors.FieldError{Field: "max_records_per_run", Msg: "must be positive"}
	}
	return nil
}

func (c SourceConfig) format() string {
	if c.Format == "" {
		return FormatJSON
	}
	return c.Format
}

func (c SourceConfig) committed() bool { return c.Isolation != ReadUncommitted }

// declared returns the columns a format json source declares, with its
// metadata columns first; nil when it declares none.
func (c SourceConfig) declared() *protocol.Schema {
	if len(c.Columns) == 0 {
		return nil
	}
	var cols []protocol.Column
	if c.Metadata {
		cols = append(cols, metadataColumns...)
	}
	return &protocol.Schema{Columns: append(cols, c.Columns...)}
}

// schema returns the schema of the rows the source emits; nil when it
// does not know it (format json without columns).
func (c SourceConfig) schema() *protocol.Schema {
	if c.format() == FormatRecord {
		cols := slices.Clone(recordColumns)
		if c.Encoding == EncodingBase64 {
			for i := range cols {
				if cols[i].Name == "key" || cols[i].Name == "value" {
					cols[i].Native = "base64"
				}
			}
		}
		return &protocol.Schema{Columns: cols, System: Kind}
	}
	return c.declared()
}

// timestampColumn is the column that carries the record's timestamp, the
// delta column of a pipeline read by windows of time; "" when the rows
// carry none.
func (c SourceConfig) timestampColumn() string {
	switch {
	case c.format() == FormatRecord:
		return "timestamp"
	case c.Metadata:
		return "_timestamp"
	}
	return ""
}

// recordColumns are the columns of format record.
var recordColumns = []protocol.Column{
	{Name: "topic", Type: protocol.TypeString, NotNull: true},
	{Name: "partition", Type: protocol.TypeInt32, NotNull: true},
	{Name: "offset", Type: protocol.TypeInt64, NotNull: true},
	{Name: "timestamp", Type: protocol.TypeTimestampTZ, NotNull: true},
	{Name: "key", Type: protocol.TypeString},
	{Name: "value", Type: protocol.TypeString},
	{Name: "headers", Type: protocol.TypeJSON, NotNull: true},
}

// metadataColumns are the columns format json adds with metadata.
var metadataColumns = []protocol.Column{
	{Name: "_topic", Type: protocol.TypeString, NotNull: true},
	{Name: "_partition", Type: protocol.TypeInt32, NotNull: true},
	{Name: "_offset", Type: protocol.TypeInt64, NotNull: true},
	{Name: "_timestamp", Type: protocol.TypeTimestampTZ, NotNull: true},
	{Name: "_key", Type: protocol.TypeString},
}

// start is where a partition's reading starts without a position.
type start struct {
	latest bool
	at     time.Time // zero: earliest
}

// The words of Kafka's offset reset that a source's and a trigger feed's
// start take besides a time.
const (
	startEarliest = "earliest"
	startLatest   = "latest"
)

func parseStart(s string) (start, error) {
	switch s {
	case "", startEarliest:
		return start{}, nil
	case startLatest:
		return start{latest: true}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return start{}, fmt.Errorf("%q is not earliest, latest or an RFC 3339 time", s)
	}
	return start{at: t}, nil
}

// SinkConfig configures a Kafka sink.
type SinkConfig struct {
	Cluster
	// Topic is the topic runs are committed to.
	Topic string `json:"topic"`
	// Key names the columns whose values make each record's key: one
	// column's text, or the JSON array of several. Empty means no key
	// (records are spread over the partitions).
	Key []string `json:"key,omitempty"`
	// Partitions, when set, creates Topic with that many partitions if it
	// does not exist; otherwise it must exist.
	Partitions int32 `json:"partitions,omitempty"`
	// Replication is the replication factor of the topics the sink
	// creates; 0 means the brokers' default.
	Replication int16 `json:"replication,omitempty"`
	// StagingTopic is where tasks stage their records until the run's
	// commit copies them into Topic; empty means <topic>.sluice-staging.
	// It is created if missing, with StagingPartitions partitions, kept
	// StagingRetention.
	StagingTopic      string `json:"staging_topic,omitempty"`
	StagingPartitions int32  `json:"staging_partitions,omitempty"`
	StagingRetention  string `json:"staging_retention,omitempty"`
	// TransactionTimeout bounds the transaction of one commit; empty means
	// 5m. Brokers refuse more than their transaction.max.timeout.ms (15m
	// by default).
	TransactionTimeout string `json:"transaction_timeout,omitempty"`
	// ConsumerGroup, for the sink of a passthrough whose source topic is
	// on the same cluster, is the consumer group whose offsets each
	// commit moves to the offsets the run read, in the run's transaction,
	// so that the group's lag is the pipeline's; empty commits none.
	ConsumerGroup string `json:"consumer_group,omitempty"`
}

// Validate checks the configuration without I/O.
func (c SinkConfig) Validate() error {
	if err := c.Cluster.Validate(); err != nil {
		return err
	}
	if err := checkTopic("topic", c.Topic); err != nil {
		return err
	}
	if c.StagingTopic != "" {
		if err := checkTopic("staging_topic", c.StagingTopic); err != nil {
			return err
		}
		if c.StagingTopic == c.Topic {
			return &connectors.FieldError{Field: "staging_topic", Msg: "must differ from topic"}
		}
	}
	for i, k := range c.Key {
		if strings.TrimSpace(k) == "" {
			return &connectors.FieldError{Field: fmt.Sprintf("key[%d]", i), Msg: "must name a column"}
		}
	}
	switch {
	case c.Partitions < 0:
		return &connectors.FieldError{Field: "partitions", Msg: "must be positive"}
	case c.Replication < 0:
		return &connectors.FieldError{Field: "replication", Msg: "must be positive (0: the brokers' default)"}
	case c.StagingPartitions < 0:
		return &connectors.FieldError{Field: "staging_partitions", Msg: "must be positive"}
	}
	if d, err := durationOr(c.StagingRetention, 0); err != nil || d < 0 {
		return &connectors.FieldError{Field: "staging_retention", Msg: fmt.Sprintf("%q is not a positive duration (examples: 7d, 48h)", c.StagingRetention)}
	}
	if d, err := durationOr(c.TransactionTimeout, 0); err != nil || d < 0 || d > 15*time.Minute {
		return &connectors.FieldError{Field: "transaction_timeout", Msg: fmt.Sprintf("%q is not a positive duration of at most 15m (brokers refuse more by default)", c.TransactionTimeout)}
	}
	return nil
}

// durationOr parses s as connectors.ParseDuration does; def when empty.
func durationOr(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	return connectors.ParseDuration(s)
}

func (c SinkConfig) stagingTopic() string {
	if c.StagingTopic != "" {
		return c.StagingTopic
	}
	return c.Topic + ".sluice-staging"
}

func (c SinkConfig) stagingPartitions() int32 {
	if c.StagingPartitions == 0 {
		return DefaultStagingPartitions
	}
	return c.StagingPartitions
}

func (c SinkConfig) transactionTimeout() time.Duration {
	d, _ := durationOr(c.TransactionTimeout, DefaultTransactionTimeout)
	return d
}

func (c SinkConfig) stagingRetention() time.Duration {
	d, _ := durationOr(c.StagingRetention, DefaultStagingRetention)
	return d
}

// checkTopic checks a topic name as Kafka does: 1 to 249 characters of
// letters, digits, '.', '_' and '-', not "." or "..".
func checkTopic(field, t string) error {
	switch {
	case t == "":
		return &connectors.FieldError{Field: field, Msg: "is required"}
	case len(t) > 249 || t == "." || t == "..":
		return &connectors.FieldError{Field: field, Msg: fmt.Sprintf("%q is not a topic name", t)}
	}
	for _, r := range t {
		if !(r == '.' || r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return &connectors.FieldError{Field: field, Msg: fmt.Sprintf("%q is not a topic name (letters, digits, '.', '_' and '-')", t)}
		}
	}
	return nil
}

func parseSourceConfig(raw json.RawMessage) (SourceConfig, error) {
	var c SourceConfig
	if err := connectors.DecodeConfig(raw, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func parseSinkConfig(raw json.RawMessage) (SinkConfig, error) {
	var c SinkConfig
	if err := connectors.DecodeConfig(raw, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ValidateSource checks a source configuration without I/O.
func ValidateSource(raw json.RawMessage) error {
	_, err := parseSourceConfig(raw)
	return err
}

// ValidateSink checks a sink configuration without I/O.
func ValidateSink(raw json.RawMessage) error {
	_, err := parseSinkConfig(raw)
	return err
}

// ValidatePassthroughSource checks the configuration of a passthrough
// source without I/O: it copies records as they are, so the fields that
// make rows of them are refused.
func ValidatePassthroughSource(raw json.RawMessage) error {
	c, err := parseSourceConfig(raw)
	switch {
	case err != nil:
		return err
	case c.Format != "":
		return passOnly("format", "it copies records as they are, not rows")
	case c.Metadata:
		return passOnly("metadata", "it copies records as they are, not rows")
	case c.Encoding != "":
		return passOnly("encoding", "it copies keys, values and headers as bytes")
	case len(c.Columns) > 0:
		return passOnly("columns", "it copies values as they are")
	}
	return nil
}

// ValidatePassthroughSink checks the configuration of a passthrough sink
// without I/O: each record goes to the partition of its source's number.
func ValidatePassthroughSink(raw json.RawMessage) error {
	c, err := parseSinkConfig(raw)
	if err == nil && len(c.Key) > 0 {
		return passOnly("key", "records keep their keys and partitions")
	}
	return err
}

func passOnly(field, why string) error {
	return &connectors.FieldError{Field: field, Msg: "is not used by pattern passthrough: " + why}
}

var errNoBrokers = errors.New("no brokers: set brokers, or the environment variable <auth_env>_BROKERS")
