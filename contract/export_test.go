package contract

// HashFunc is the hash action without its memo, for benchmarks.
func HashFunc(key []byte) func(dst, v []byte) ([]byte, error) { return newHasher(key).apply }
