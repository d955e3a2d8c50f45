package files

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// Units are what the files connector exchanges in a passthrough
// (connectors.Passthrough.Units): files with their relative names, whole
// or in byte ranges.
const Units = "objects"

// Passthrough sizes.
const (
	// passBlock is the block of a file's checksum: a file's checksum is
	// the XXH3-128 of its bytes when it has one block, else the XXH3-128
	// of its blocks' digests one after the other, so that the ranges of a
	// split file, which start on blocks, are summed apart. It is also the
	// smallest range a file is split into.
	passBlock = 64 << 20
	// maxRange is the largest range a file is split into: a range staged
	// on S3 becomes one part of the object at commit (at most 5 GiB).
	maxRange = 4 << 30
	// maxParts is the most ranges one file is split into (an S3 multipart
	// upload's limit).
	maxParts = 10_000
	// removesPerTask bounds the removals one task records.
	removesPerTask = 10_000
	// stateSuffix makes the name of the default state directory of a
	// passthrough sink: .<target's name>.sluice beside the target.
	stateSuffix = ".sluice"
)

// passSourceFields are the fields of a passthrough source's configuration.
var passSourceFields = []string{"exclude", "path", "s3"}

// passSinkFields are the fields of a passthrough sink's configuration.
var passSinkFields = []string{"mirror", "path", "s3", "state_dir"}

// ValidatePassthroughSource checks the configuration of a passthrough
// source without I/O: a path (every file under it is copied, hidden ones
// and those starting with '_' too) and the globs it excludes.
func ValidatePassthroughSource(raw json.RawMessage) error {
	var c SourceConfig
	if err := decodeStrict(raw, passSourceFields, &c); err != nil {
		return onlyFields(err, passSourceFields, "a passthrough copies every file as it is")
	}
	if err := c.Validate(); err != nil {
		return err
	}
	return checkExclude(c.Exclude)
}

// ValidatePassthroughSink checks the configuration of a passthrough sink
// without I/O: the target directory (or s3:// prefix), mirror and where
// it keeps its state.
func ValidatePassthroughSink(raw json.RawMessage) error {
	var c SinkConfig
	if err := decodeStrict(raw, passSinkFields, &c); err != nil {
		return onlyFields(err, passSinkFields, "a passthrough writes every file as it is, in place")
	}
	if err := checkPath(c.Path, c.S3); err != nil {
		return err
	}
	_, err := stateRoot(c)
	return err
}

// onlyFields rewords the unknown-field error of decodeStrict for a
// passthrough configuration, saying why the field is not one.
func onlyFields(err error, known []string, why string) error {
	var fe *connectors.FieldError
	if errors.As(err, &fe) && strings.HasPrefix(fe.Msg, "unknown field") {
		return &connectors.FieldError{Field: fe.Field, Msg: fmt.Sprintf("is not used by pattern passthrough: %s (known: %s)", why, strings.Join(known, ", "))}
	}
	return err
}

// checkExclude checks the exclude globs.
func checkExclude(globs []string) error {
	for i, g := range globs {
		p := strings.Trim(g, "/")
		if p == "" {
			return &connectors.FieldError{Field: fmt.Sprintf("exclude[%d]", i), Msg: "is empty"}
		}
		if _, err := path.Match(p, ""); err != nil {
			return &connectors.FieldError{Field: fmt.Sprintf("exclude[%d]", i), Msg: fmt.Sprintf("bad pattern %q: %v", g, err)}
		}
	}
	return nil
}

// excluded reports whether the file rel (slash-separated, relative to the
// source's root) is left out by one of globs: a glob without '/' matches
// the name of the file or of any directory above it ("*.tmp", ".git",
// "_delta_log"); a glob with '/' matches the path from the root of the
// file or of a directory above it ("logs/2024-*"), a leading or
// trailing '/' ignored. A directory that matches is left out with
// everything under it.
func excluded(globs []string, rel string) bool {
	if len(globs) == 0 {
		return false
	}
	for i := 0; i <= len(rel); i++ {
		if i < len(rel) && rel[i] != '/' {
			continue
		}
		prefix := rel[:i]
		base := prefix[strings.LastIndexByte(prefix, '/')+1:]
		for _, g := range globs {
			p := strings.Trim(g, "/")
			target := prefix
			if !strings.Contains(p, "/") {
				target = base
			}
			if ok, _ := path.Match(p, target); ok {
				return true
			}
		}
	}
	return false
}

// stateRoot returns where a passthrough sink keeps its state: StateDir,
// or .<name>.sluice beside the target (a local directory, or an s3://
// prefix). A target at a bucket's root needs a StateDir.
func stateRoot(c SinkConfig) (string, error) {
	if c.StateDir != "" {
		if objstore.IsURL(c.StateDir) != objstore.IsURL(c.Path) {
			return "", &connectors.FieldError{Field: "state_dir", Msg: "must be on the target's store: an s3:// prefix in the target's bucket for an s3:// path, a local directory for a local one"}
		}
		if objstore.IsURL(c.StateDir) {
			st, err := objstore.ParseURL(c.StateDir)
			if err != nil {
				return "", &connectors.FieldError{Field: "state_dir", Msg: err.Error()}
			}
			target, _ := objstore.ParseURL(c.Path)
			if st.Bucket != target.Bucket {
				return "", &connectors.FieldError{Field: "state_dir", Msg: fmt.Sprintf("must be in the target's bucket %s (objects are staged there and copied into place on the server)", target.Bucket)}
			}
			if within(target.Key, st.Key) {
				return "", &connectors.FieldError{Field: "state_dir", Msg: "must not lie inside the target: the target would hold it"}
			}
			return st.String(), nil
		}
		dir, err := localPath(c.StateDir)
		if err != nil {
			return "", &connectors.FieldError{Field: "state_dir", Msg: err.Error()}
		}
		target, _ := localPath(c.Path)
		if within(filepath.ToSlash(filepath.Clean(target)), filepath.ToSlash(filepath.Clean(dir))) {
			return "", &connectors.FieldError{Field: "state_dir", Msg: "must not lie inside the target: the target would hold it"}
		}
		return filepath.Clean(dir), nil
	}
	if objstore.IsURL(c.Path) {
		loc, err := objstore.ParseURL(c.Path)
		if err != nil {
			return "", &connectors.FieldError{Field: "path", Msg: err.Error()}
		}
		if loc.Key == "" {
			return "", &connectors.FieldError{Field: "state_dir", Msg: "is required for a target at the root of a bucket (s3://bucket/prefix for the staging and manifests)"}
		}
		dir, name := path.Split(loc.Key)
		return objstore.Location{Bucket: loc.Bucket, Key: dir + "." + name + stateSuffix}.String(), nil
	}
	p, err := localPath(c.Path)
	if err != nil {
		return "", &connectors.FieldError{Field: "path", Msg: err.Error()}
	}
	p = filepath.Clean(p)
	if filepath.Dir(p) == p {
		return "", &connectors.FieldError{Field: "state_dir", Msg: "is required for a target at the root of a file system"}
	}
	return filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+stateSuffix), nil
}

// within reports whether the slash-separated path p is root or lies
// under it; every path lies under the empty root.
func within(root, p string) bool {
	return root == "" || p == root || strings.HasPrefix(p, root+"/")
}
