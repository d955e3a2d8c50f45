package files

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// Kind is the connector kind this package registers.
const Kind = "files"

// Defaults.
const (
	DefaultTargetBytes  = 64 << 20
	DefaultMaxFiles     = 1000
	DefaultKeepVersions = 3
)

// SourceConfig configures a files source.
type SourceConfig struct {
	// Path is the directory to read, or one file: a local path (or a
	// file:// URL), or s3://bucket/prefix. A symlink (such as a dataset's
	// "current"), or on S3 a current pointer object, is resolved once,
	// when the run is planned.
	Path string `json:"path"`
	// Format is jsonl, csv or parquet; empty means from the file extensions
	// (.jsonl and .ndjson, .csv, .parquet), which must then agree.
	Format string `json:"format"`
	// Glob selects files by their slash-separated path relative to Path
	// (path.Match syntax), or by base name when it holds no '/'. Empty means
	// every file with the format's extension. Names starting with '_' or '.'
	// are always skipped, and so are directories with such names.
	Glob string `json:"glob"`
	// Layout makes the source partition-based: the directories under Path
	// are time partitions named by this template, such as
	// "date={date}/hour={hour}", and a run of an incremental pipeline reads
	// the one partition its window is (Glob then applies inside it). The
	// placeholders are {date} (2006-01-02), {year}, {month}, {day} and
	// {hour} (two digits), in UTC; a layout names a day ({date}, or {year},
	// {month} and {day}) and optionally an hour, which makes partitions of
	// 1h or 24h. A run without a window (a full load) reads the whole tree.
	Layout string `json:"layout"`
	// Ready says when a partition is complete and a run may read it:
	// "success_file" (the default) when it holds a _SUCCESS file;
	// "next_partition" when the next partition's directory exists, or
	// it holds a _SUCCESS file.
	Ready string `json:"ready"`
	// S3 says how to reach the store of an s3:// path, where the standard
	// AWS environment does not (see objstore.Config); never credentials.
	S3 objstore.Config `json:"s3,omitzero"`
	// ManifestDir is where a source read by arrival (incremental.by:
	// modified) keeps its manifests, a directory per pipeline; empty means
	// <Path>/_sluice/manifests (hidden from every listing). For a source
	// on S3 it may be an s3:// prefix of the source's bucket, or a local
	// directory.
	ManifestDir string `json:"manifest_dir"`
	// Exclude lists the globs of the files a passthrough source leaves
	// out (pattern passthrough only; see matchExclude).
	Exclude []string `json:"exclude,omitempty"`
}

// The readiness conventions of a partition-based source.
const (
	ReadySuccessFile   = "success_file"
	ReadyNextPartition = "next_partition"
)

// SinkConfig configures a files sink.
type SinkConfig struct {
	// Path is the dataset directory: a local path (or a file:// URL), or
	// s3://bucket/prefix.
	Path string `json:"path"`
	// Format is jsonl (the default), csv or parquet.
	Format string `json:"format"`
	// KeepVersions is how many committed versions stay; 0 means 3.
	KeepVersions int `json:"keep_versions"`
	// S3 says how to reach the store of an s3:// path, where the standard
	// AWS environment does not (see objstore.Config); never credentials.
	S3 objstore.Config `json:"s3,omitzero"`
	// Mirror makes a passthrough sink remove from the target what its
	// source no longer has (pattern passthrough only).
	Mirror bool `json:"mirror,omitempty"`
	// StateDir is where a passthrough sink keeps its staging and its
	// manifests: a local directory on the target's file system, or an
	// s3:// prefix in the target's bucket; empty means the hidden
	// directory .<name>.sluice beside the target (pattern passthrough
	// only).
	StateDir string `json:"state_dir,omitempty"`
}

var formats = []string{"jsonl", "csv", "parquet"}

// s3Fields are the fields of the s3 object of a configuration
// (objstore.Config).
var s3Fields = []string{"endpoint", "path_style", "region"}

// extFormat maps file extensions to formats.
var extFormat = map[string]string{".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}

// formatOf returns the format of a file name from its extension, or "".
func formatOf(name string) string { return extFormat[strings.ToLower(path.Ext(name))] }

func checkFormat(f string) error {
	if f != "" && !slices.Contains(formats, f) {
		return &connectors.FieldError{Field: "format", Msg: fmt.Sprintf("unknown format %q (want one of %s)", f, strings.Join(formats, ", "))}
	}
	return nil
}

// Validate checks the configuration without I/O.
func (c SourceConfig) Validate() error {
	if err := checkPath(c.Path, c.S3); err != nil {
		return err
	}
	if err := checkFormat(c.Format); err != nil {
		return err
	}
	if c.Glob != "" {
		if _, err := path.Match(c.Glob, ""); err != nil {
			return &connectors.FieldError{Field: "glob", Msg: fmt.Sprintf("bad pattern %q: %v", c.Glob, err)}
		}
	}
	if c.Layout != "" {
		if _, err := parseLayout(c.Layout); err != nil {
			return &connectors.FieldError{Field: "layout", Msg: err.Error()}
		}
	}
	switch c.Ready {
	case "", ReadySuccessFile, ReadyNextPartition:
		if c.Ready != "" && c.Layout == "" {
			return &connectors.FieldError{Field: "ready", Msg: "is only for a partition-based source: set layout"}
		}
	default:
		return &connectors.FieldError{Field: "ready", Msg: fmt.Sprintf("unknown convention %q (want %s or %s)", c.Ready, ReadySuccessFile, ReadyNextPartition)}
	}
	return nil
}

// Validate checks the configuration without I/O.
func (c SinkConfig) Validate() error {
	if err := checkPath(c.Path, c.S3); err != nil {
		return err
	}
	if err := checkFormat(c.Format); err != nil {
		return err
	}
	if c.KeepVersions < 0 {
		return &connectors.FieldError{Field: "keep_versions", Msg: fmt.Sprintf("must be at least 1, got %d", c.KeepVersions)}
	}
	return nil
}

func (c SinkConfig) withDefaults() SinkConfig {
	if c.Format == "" {
		c.Format = "jsonl"
	}
	if c.KeepVersions == 0 {
		c.KeepVersions = DefaultKeepVersions
	}
	return c
}

// decodeStrict decodes a JSON object into v, naming an unknown field or a
// field of the wrong type in a *connectors.FieldError.
func decodeStrict(raw json.RawMessage, known []string, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return &connectors.FieldError{Msg: fmt.Sprintf("config is not a JSON object: %v", err)}
	}
	var names []string
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !slices.Contains(known, k) {
			return &connectors.FieldError{Field: k, Msg: fmt.Sprintf("unknown field (known: %s)", strings.Join(known, ", "))}
		}
	}
	if raw, ok := fields["s3"]; ok {
		var s3 map[string]json.RawMessage
		if err := json.Unmarshal(raw, &s3); err != nil {
			return &connectors.FieldError{Field: "s3", Msg: "want an object {endpoint, region, path_style}"}
		}
		for k := range s3 {
			if !slices.Contains(s3Fields, k) {
				return &connectors.FieldError{Field: "s3." + k, Msg: fmt.Sprintf("unknown field (known: %s; credentials come from the AWS environment, never from a spec)", strings.Join(s3Fields, ", "))}
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return connectors.TypeError(te)
		}
		return &connectors.FieldError{Msg: err.Error()}
	}
	return nil
}

func parseSourceConfig(raw json.RawMessage) (SourceConfig, error) {
	var c SourceConfig
	if err := decodeStrict(raw, []string{"exclude", "format", "glob", "layout", "manifest_dir", "path", "ready", "s3"}, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func parseSinkConfig(raw json.RawMessage) (SinkConfig, error) {
	var c SinkConfig
	if err := decodeStrict(raw, []string{"format", "keep_versions", "mirror", "path", "s3", "state_dir"}, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ValidateSource checks a source configuration without I/O. Errors are
// *connectors.FieldError naming the field.
func ValidateSource(raw json.RawMessage) error {
	c, err := parseSourceConfig(raw)
	if err == nil && len(c.Exclude) > 0 {
		err = &connectors.FieldError{Field: "exclude", Msg: "is only for pattern passthrough (a load reads the files glob selects)"}
	}
	return err
}

// PartitionSize returns the size of the time partitions of a source
// configuration with a layout (1h with {hour}, 24h without), or 0 for one
// without a layout or that is not valid. It does no I/O.
func PartitionSize(raw json.RawMessage) time.Duration {
	c, err := parseSourceConfig(raw)
	if err != nil || c.Layout == "" {
		return 0
	}
	l, err := parseLayout(c.Layout)
	if err != nil {
		return 0
	}
	return l.size
}

// ValidateSink checks a sink configuration without I/O. Errors are
// *connectors.FieldError naming the field.
func ValidateSink(raw json.RawMessage) error {
	c, err := parseSinkConfig(raw)
	switch {
	case err != nil:
		return err
	case c.Mirror:
		return &connectors.FieldError{Field: "mirror", Msg: "is only for pattern passthrough"}
	case c.StateDir != "":
		return &connectors.FieldError{Field: "state_dir", Msg: "is only for pattern passthrough"}
	}
	return nil
}

// Register adds the "files" connector to reg: source and sink with their
// validators, and the change log Applier of cdc_apply pipelines
// (CDCTarget).
func Register(reg *connectors.Registry) {
	reg.Register(connectors.Connector{
		Kind:  Kind,
		Paths: connectors.PathFields("path", "manifest_dir", "state_dir"),
		Source: func(_ context.Context, raw json.RawMessage) (connectors.Source, error) {
			c, err := parseSourceConfig(raw)
			if err != nil {
				return nil, err
			}
			return NewSource(c)
		},
		Sink: func(_ context.Context, raw json.RawMessage) (connectors.Sink, error) {
			c, err := parseSinkConfig(raw)
			if err != nil {
				return nil, err
			}
			return NewSink(c)
		},
		ValidateSource:   ValidateSource,
		ValidateSink:     ValidateSink,
		SinkAppends:      true,
		SinkValueWindows: true,
		SourcePartitions: PartitionSize,
		Positions:        &connectors.Positions{Name: ByModified, Check: checkByModified},
		Params:           checkParams,
		CDCTarget:        &connectors.CDCTarget{Validate: ValidateApplier, Open: openApplier, Check: checkApplier},
		ValidateDataset:  ValidateSink,
		Passthrough: &connectors.Passthrough{Units: Units, Noun: "files", Source: true, Sink: true,
			ValidateSource: ValidatePassthroughSource, ValidateSink: ValidatePassthroughSink},
	})
}
