package connectors

import (
	"slices"
	"testing"
)

func TestPackGroups(t *testing.T) {
	sizes := func(n int, each int64) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = each
		}
		return out
	}
	tests := []struct {
		name   string
		sizes  []int64
		target int64
		want   []int // group sizes
	}{
		{"under the target", sizes(10, 5), 100, []int{10}},
		{"three even groups", sizes(500, 2060), 500*2060/3 + 1, []int{167, 166, 167}},
		{"no tail of one", sizes(7, 10), 30, []int{2, 3, 2}},
		{"uneven", []int64{90, 5, 5, 5, 5, 90}, 100, []int{3, 3}},
		{"one big", []int64{5, 300, 5}, 100, []int{1, 1, 1}},
		{"none", nil, 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			next := 0
			for _, g := range PackGroups(tt.sizes, tt.target) {
				for _, i := range g {
					if i != next {
						t.Fatalf("items out of order: %v", g)
					}
					next++
				}
				got = append(got, len(g))
			}
			if next != len(tt.sizes) || !slices.Equal(got, tt.want) {
				t.Errorf("groups of %v, want %v", got, tt.want)
			}
		})
	}
}
