package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/connectors/iceberg/s3test"
	"github.com/sluicehq/sluice/devcluster"
)

// ensureSource creates the source table unless it exists with its rows.
func (b *bench) ensureSource(ctx context.Context) error {
	return harness.Orders(ctx, b.conn, b.cfg.schema, "lake_src", b.cfg.rows, b.stdout)
}

// psqlCopy times (a), psql's \copy of the source to a CSV file, and checks
// the file's size: the same on every repetition (its line count is the
// row count on the first).
func (b *bench) psqlCopy(ctx context.Context, _ *devcluster.Cluster) error {
	file := filepath.Join(b.dir, "psql.csv")
	defer os.Remove(file)
	cmd := exec.CommandContext(ctx, b.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", b.cfg.dsn,
		"-c", `\copy (SELECT `+columns+` FROM `+b.cfg.srcTable()+`) TO '`+file+`' csv`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	srv0 := measure.ServerCPU()
	start := time.Now()
	err := cmd.Run()
	secs := time.Since(start).Seconds()
	srv1 := measure.ServerCPU()
	if err != nil {
		return fmt.Errorf("psql \\copy: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	switch {
	case b.csvBytes == 0:
		if n := int64(bytes.Count(data, []byte{'\n'})); n != b.cfg.rows {
			return fmt.Errorf("psql wrote %d lines, want %d", n, b.cfg.rows)
		}
		b.csvBytes = int64(len(data))
	case int64(len(data)) != b.csvBytes:
		return fmt.Errorf("psql wrote %d bytes, %d before", len(data), b.csvBytes)
	}
	m := b.ms["psql_copy_to_csv"]
	m.add(secs, cpuUse{client: (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(), server: srv1 - srv0})
	m.Verified = "row count (lines of the file)"
	fmt.Fprintf(b.stdout, " psql %.2fs", secs)
	return nil
}

// s3Client is an S3 client of the benchmark's server with the settings
// the sink's FileIO uses: the standard AWS environment, the endpoint,
// path-style addressing.
func (b *bench) s3Client(ctx context.Context) (*s3.Client, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, err
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(b.cfg.s3)
		o.UsePathStyle = true
	}), nil
}

func (b *bench) newBucket(ctx context.Context) error {
	cl, err := b.s3Client(ctx)
	if err != nil {
		return err
	}
	s3test.Remove(ctx, cl, b.cfg.bucket()) // left by a killed run
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b.cfg.bucket())}); err != nil {
		return fmt.Errorf("create bucket %s on %s (run `make services`): %w", b.cfg.bucket(), b.cfg.s3, err)
	}
	return nil
}

func (b *bench) removeBucket() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := b.s3Client(ctx)
	if err == nil {
		err = s3test.Remove(ctx, cl, b.cfg.bucket())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lake: remove bucket %s: %v\n", b.cfg.bucket(), err)
	}
}

// uploads times (d) and (e): the Parquet bytes of (c)'s table, as one
// object, through the sink's upload, then through a bare multipart upload;
// each object's size is checked.
func (b *bench) uploads(ctx context.Context, _ *devcluster.Cluster) error {
	cl, err := b.s3Client(ctx)
	if err != nil {
		return err
	}
	blob, err := b.tableBytes(ctx, cl)
	if err != nil {
		return err
	}
	key := "upload/sluice.bin"
	runtime.GC()
	cpu0 := measure.SelfCPU()
	start := time.Now()
	n, err := iceberg.Upload(ctx, b.s3, "s3://"+b.cfg.bucket()+"/"+key, bytes.NewReader(blob))
	secs := time.Since(start).Seconds()
	if err != nil {
		return err
	}
	if err := b.checkObject(ctx, cl, key, n, len(blob)); err != nil {
		return err
	}
	m := b.ms["sink_s3_upload"]
	m.add(secs, cpuUse{client: measure.SelfCPU() - cpu0})
	m.Verified = "the object's size equals the bytes"
	fmt.Fprintf(b.stdout, ", sink upload %.2fs", secs)

	key = "upload/bare.bin"
	runtime.GC()
	cpu0 = measure.SelfCPU()
	start = time.Now()
	if err := bareUpload(ctx, cl, b.cfg.bucket(), key, blob); err != nil {
		return err
	}
	secs = time.Since(start).Seconds()
	if err := b.checkObject(ctx, cl, key, int64(len(blob)), len(blob)); err != nil {
		return err
	}
	m = b.ms["bare_s3_upload"]
	m.add(secs, cpuUse{client: measure.SelfCPU() - cpu0})
	m.Verified = "the object's size equals the bytes"
	fmt.Fprintf(b.stdout, ", bare upload %.2fs", secs)
	return nil
}

// tableBytes downloads the data files of (c)'s table and joins them.
func (b *bench) tableBytes(ctx context.Context, cl *s3.Client) ([]byte, error) {
	keys, err := s3test.Keys(ctx, cl, b.cfg.bucket(), "warehouse/")
	if err != nil {
		return nil, err
	}
	var blob []byte
	for _, k := range keys {
		if !strings.HasSuffix(k, ".parquet") {
			continue
		}
		out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.cfg.bucket()), Key: aws.String(k)})
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(out.Body)
		out.Body.Close()
		if err != nil {
			return nil, err
		}
		blob = append(blob, buf.Bytes()...)
	}
	if len(blob) == 0 {
		return nil, errors.New("no Parquet file in the S3 table")
	}
	b.parquetBytes = int64(len(blob))
	return blob, nil
}

func (b *bench) checkObject(ctx context.Context, cl *s3.Client, key string, n int64, want int) error {
	head, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.cfg.bucket()), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("head %s: %w", key, err)
	}
	if n != int64(want) || aws.ToInt64(head.ContentLength) != int64(want) {
		return fmt.Errorf("%s: wrote %d bytes, the object has %d, want %d", key, n, aws.ToInt64(head.ContentLength), want)
	}
	return nil
}

// bareUpload uploads data as one object in a multipart upload of 8 MiB
// parts, four in flight at a time.
func bareUpload(ctx context.Context, cl *s3.Client, bucket, key string, data []byte) error {
	const part = 8 << 20
	up, err := cl.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return err
	}
	n := (len(data) + part - 1) / part
	parts := make([]types.CompletedPart, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range n {
		g.Go(func() error {
			body := data[i*part : min((i+1)*part, len(data))]
			out, err := cl.UploadPart(gctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: up.UploadId,
				PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(body)})
			if err != nil {
				return err
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		cl.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: up.UploadId})
		return err
	}
	_, err = cl.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	return err
}
