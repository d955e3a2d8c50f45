package arrowconv

import (
	"hash/maphash"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// ParquetConfig says how WriterProperties sets up a Parquet file.
type ParquetConfig struct {
	// Codec compresses the pages at Level (compress.DefaultCompressionLevel
	// for the codec's default).
	Codec compress.Compression
	Level int
	// Mem allocates the writer's buffers; nil for Go's allocator.
	Mem memory.Allocator
	// Extra holds further properties (row group length, created-by),
	// applied after the ones WriterProperties chooses.
	Extra []parquet.WriterProperty
}

// sampleRows is how many values of a column WriterProperties looks at to
// decide its encoding.
const sampleRows = 4096

// WriterProperties returns the writer properties of a Parquet file of
// schema sc whose rows look like first's (the file's first record; nil
// when there is none yet): pages compressed as cfg says, statistics on
// (readers prune by them), decimals of up to 18 digits stored as
// integers, and an encoding per column chosen from a sample of first's
// values. A column whose values repeat (at most half of them distinct: a
// status, a country, a small count) gets a dictionary. Any other (keys,
// times, amounts, names) gets none, since building a dictionary that the
// writer then drops, as it does once one outgrows its page, costs more
// than the rest of the column's encoding: integers (dates, times and small
// decimals too) are then delta-encoded (DELTA_BINARY_PACKED, which
// ascending keys and times shrink to a few bits a value, and which every
// Parquet reader of the last years reads), other types written plain.
// Nested columns keep a dictionary, dropped where it does not pay. arrp
// are the Arrow properties the file is written with.
func WriterProperties(sc *arrow.Schema, first arrow.RecordBatch, arrp pqarrow.ArrowWriterProperties, cfg ParquetConfig) (*parquet.WriterProperties, error) {
	base := []parquet.WriterProperty{
		parquet.WithCompression(cfg.Codec), parquet.WithCompressionLevel(cfg.Level),
		parquet.WithStats(true), parquet.WithStoreDecimalAsInteger(true),
		parquet.WithDictionaryDefault(true),
	}
	if cfg.Mem != nil {
		base = append(base, parquet.WithAllocator(cfg.Mem))
	}
	base = append(base, cfg.Extra...)
	ps, err := pqarrow.ToParquet(sc, parquet.NewWriterProperties(base...), arrp)
	if err != nil {
		return nil, err
	}
	leaf := 0
	seed := maphash.MakeSeed()
	for i, f := range sc.Fields() {
		n := leaves(f.Type)
		if n == 1 && !nested(f.Type) && first != nil {
			path := ps.Column(leaf).Path()
			switch {
			case f.Type.ID() == arrow.BOOL:
				base = append(base, parquet.WithDictionaryFor(path, false))
			case repetitive(first.Column(i), seed):
				base = append(base, parquet.WithDictionaryCostFallbackFor(path, true))
			default:
				base = append(base, parquet.WithDictionaryFor(path, false))
				if pt := ps.Column(leaf).PhysicalType(); pt == parquet.Types.Int32 || pt == parquet.Types.Int64 {
					base = append(base, parquet.WithEncodingFor(path, parquet.Encodings.DeltaBinaryPacked))
				}
			}
		} else {
			for j := range n {
				base = append(base, parquet.WithDictionaryCostFallbackFor(ps.Column(leaf+j).Path(), true))
			}
		}
		leaf += n
	}
	return parquet.NewWriterProperties(base...), nil
}

// nested reports whether t holds other types.
func nested(t arrow.DataType) bool {
	_, ok := t.(arrow.NestedType)
	return ok
}

// leaves returns how many Parquet columns a field of type t becomes.
func leaves(t arrow.DataType) int {
	switch t := t.(type) {
	case *arrow.MapType:
		return leaves(t.KeyType()) + leaves(t.ItemType())
	case arrow.ListLikeType:
		return leaves(t.Elem())
	case *arrow.StructType:
		n := 0
		for _, f := range t.Fields() {
			n += leaves(f.Type)
		}
		return n
	case arrow.ExtensionType:
		return leaves(t.StorageType())
	}
	return 1
}

// repetitive reports whether at most half of the first sampleRows values
// of col that are not NULL are distinct (told apart by a hash).
func repetitive(col arrow.Array, seed maphash.Seed) bool {
	if e, ok := col.(array.ExtensionArray); ok {
		col = e.Storage()
	}
	n := min(col.Len(), sampleRows)
	key := keyFunc(col, seed)
	if key == nil {
		return true
	}
	seen := make(map[uint64]struct{}, n)
	values := 0
	for i := range n {
		if col.IsNull(i) {
			continue
		}
		values++
		seen[key(i)] = struct{}{}
	}
	return len(seen)*2 <= values
}

// keyFunc returns a function giving a hash of value i of col, or nil for a
// type it does not know.
func keyFunc(col arrow.Array, seed maphash.Seed) func(int) uint64 {
	switch a := col.(type) {
	case *array.Int16:
		return func(i int) uint64 { return uint64(a.Value(i)) }
	case *array.Int32:
		return func(i int) uint64 { return uint64(a.Value(i)) }
	case *array.Int64:
		return func(i int) uint64 { return uint64(a.Value(i)) }
	case *array.Date32:
		return func(i int) uint64 { return uint64(a.Value(i)) }
	case *array.Time64:
		return func(i int) uint64 { return uint64(a.Value(i)) }
	case *array.Timestamp:
		return func(i int) uint64 { return uint64(a.Value(i)) }
	case *array.Float32:
		return func(i int) uint64 { return uint64(math.Float32bits(a.Value(i))) }
	case *array.Float64:
		return func(i int) uint64 { return math.Float64bits(a.Value(i)) }
	case *array.Decimal128:
		return func(i int) uint64 { v := a.Value(i); return v.LowBits() ^ uint64(v.HighBits())*0x9e3779b97f4a7c15 }
	case *array.String:
		return func(i int) uint64 { return maphash.String(seed, a.Value(i)) }
	case *array.Binary:
		return func(i int) uint64 { return maphash.Bytes(seed, a.Value(i)) }
	case *array.FixedSizeBinary:
		return func(i int) uint64 { return maphash.Bytes(seed, a.Value(i)) }
	}
	return nil
}
