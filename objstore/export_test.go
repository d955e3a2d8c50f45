package objstore

// Small sets a bucket's part size, page size and copy thresholds small,
// so that tests reach multipart uploads, pagination and multipart copies
// with little data.
func Small(b *Bucket, partSize int, pageSize int32, maxCopy, copyPart int64) {
	b.partSize, b.pageSize, b.maxCopy, b.copyPart = partSize, pageSize, maxCopy, copyPart
	b.partBufs.New = func() any { buf := make([]byte, 0, b.partSize); return &buf }
}
