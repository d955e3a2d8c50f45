package objstore

import "context"

// Small sets a bucket's part size, page size and copy thresholds small,
// so that tests reach multipart uploads, pagination and multipart copies
// with little data.
func Small(b *Bucket, partSize int, pageSize int32, maxCopy, copyPart int64) {
	b.partSize, b.pageSize, b.maxCopy, b.copyPart = partSize, pageSize, maxCopy, copyPart
	b.partBufs.New = func() any { buf := make([]byte, 0, b.partSize); return &buf }
}

// PutWithMD5 writes data as key in one request with the given
// Content-MD5 (base64), as a Writer with ContentMD5 sends it.
func PutWithMD5(b *Bucket, ctx context.Context, key string, data []byte, md5 string) error {
	return b.put(ctx, key, data, &md5)
}
