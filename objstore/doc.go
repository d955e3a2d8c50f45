// Package objstore reads and writes objects in S3 or an S3-compatible store
// (MinIO, versitygw, Ceph, R2): s3://bucket/prefix locations, a client set
// up from the standard AWS environment and shared configuration (never from
// secrets in a spec), paginated listings, ranged reads behind io.ReaderAt,
// parallel multipart uploads behind io.Writer, server-side copies and batch
// deletes. It knows nothing of datasets: the files connector builds its
// staging, versions and commit on it.
//
// Errors of a missing object wrap fs.ErrNotExist; a read of an object that
// no longer has the ETag it was opened with wraps ErrChanged.
package objstore
