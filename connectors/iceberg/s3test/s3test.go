// Package s3test gives tests a bucket of their own on the S3 server (a
// versitygw) that `make services` starts. Outside CI a test skips when the
// server is not reachable; in CI (CI=true) it fails loudly.
package s3test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// The server scripts/services.sh starts, and its test credentials.
const (
	DefaultEndpoint = "http://127.0.0.1:7070"
	AccessKey       = "sluice-test"
	SecretKey       = "sluice-test-secret"
	Region          = "us-east-1"
)

// Endpoint is $SLUICE_TEST_S3 or DefaultEndpoint.
func Endpoint() string {
	if e := os.Getenv("SLUICE_TEST_S3"); e != "" {
		return e
	}
	return DefaultEndpoint
}

// Client returns an S3 client of the test server, path-style.
func Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(Endpoint()),
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		UsePathStyle: true,
	})
}

// Env sets the standard AWS environment variables for the test server's
// credentials and region, for the test (t.Setenv), as a user would.
func Env(t testing.TB) {
	t.Helper()
	for k, v := range envVars {
		t.Setenv(k, v)
	}
}

// envVars is the environment Env sets.
var envVars = map[string]string{
	"AWS_ACCESS_KEY_ID": AccessKey, "AWS_SECRET_ACCESS_KEY": SecretKey,
	"AWS_REGION": Region, "AWS_EC2_METADATA_DISABLED": "true",
}

// Bucket creates a bucket for the test, emptied and removed when the test
// ends, sets the AWS environment (Env) and returns the server's endpoint
// and the bucket's name.
func Bucket(t testing.TB) (endpoint, bucket string) {
	t.Helper()
	return newBucket(t, Env)
}

// SharedBucket is Bucket for tests that run in parallel, where t.Setenv
// cannot be used: it sets the AWS environment of Env for the rest of the
// test binary's run (the same values on every call).
func SharedBucket(t testing.TB) (endpoint, bucket string) {
	t.Helper()
	return newBucket(t, func(testing.TB) {
		for k, v := range envVars {
			os.Setenv(k, v)
		}
	})
}

func newBucket(t testing.TB, env func(testing.TB)) (endpoint, bucket string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the S3 server; skipped with -short")
	}
	endpoint = Endpoint()
	cl := Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.ListBuckets(ctx, &s3.ListBucketsInput{}); err != nil {
		msg := fmt.Sprintf("the S3 server is not reachable at %s (SLUICE_TEST_S3): %v; run `make services`", endpoint, err)
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	bucket = fmt.Sprintf("sluice-t-%d-%d", time.Now().UnixNano()%1e9, rand.IntN(1000))
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	env(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := Remove(ctx, cl, bucket); err != nil {
			t.Errorf("remove bucket %s: %v", bucket, err)
		}
	})
	return endpoint, bucket
}

// Keys lists the keys of the objects under prefix.
func Keys(ctx context.Context, cl *s3.Client, bucket, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(cl, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}

// Uploads lists the multipart uploads in progress under prefix.
func Uploads(ctx context.Context, cl *s3.Client, bucket, prefix string) ([]types.MultipartUpload, error) {
	out, err := cl.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		return nil, err
	}
	return out.Uploads, nil
}

// Remove deletes every object and upload of a bucket, then the bucket.
func Remove(ctx context.Context, cl *s3.Client, bucket string) error {
	keys, err := Keys(ctx, cl, bucket, "")
	if err != nil {
		return err
	}
	for _, k := range keys {
		if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)}); err != nil {
			return err
		}
	}
	if ups, err := Uploads(ctx, cl, bucket, ""); err == nil {
		for _, u := range ups {
			cl.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: u.Key, UploadId: u.UploadId})
		}
	}
	_, err = cl.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)})
	return err
}
