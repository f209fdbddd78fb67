package main

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestCollectorBlockCacheMustFitTheMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		cache, limit, err string
	}{
		{"128Mi", "512Mi", ""},
		{"256Mi", "512Mi", ""},
		{"1Gi", "", ""}, // no limit, nothing to fit under
		{"257Mi", "512Mi", "--collector-block-cache-size: 257Mi plus 128Mi of memtables and 128Mi of heap does not fit under --collector-memory-limit 512Mi"},
		{"0", "512Mi", "--collector-block-cache-size: 0 is not a positive size"},
	} {
		var limit resource.Quantity
		if c.limit != "" {
			limit = resource.MustParse(c.limit)
		}
		err := checkCollectorMemory(resource.MustParse(c.cache), limit)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s under %q: %v", c.cache, c.limit, err)
		case c.err != "" && (err == nil || err.Error() != c.err):
			t.Errorf("%s under %q: %v, want %q", c.cache, c.limit, err, c.err)
		}
	}
}
