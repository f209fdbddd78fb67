package main

import (
	"strings"
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

func TestWatchNamespacesBecomeTheCacheNamespaces(t *testing.T) {
	got, err := cacheNamespaces(nil)
	if err != nil || got != nil {
		t.Fatalf("no list: %v, %v; want every namespace (nil)", got, err)
	}
	got, err = cacheNamespaces([]string{"shop", "support"})
	if err != nil || len(got) != 2 {
		t.Fatalf("two namespaces: %v, %v", got, err)
	}
	for _, ns := range []string{"shop", "support"} {
		if _, ok := got[ns]; !ok {
			t.Errorf("namespace %q missing from %v", ns, got)
		}
	}
	_, err = cacheNamespaces([]string{"shop", "Bad_NS"})
	want := `--watch-namespaces: "Bad_NS" is not a namespace name: `
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("invalid name: %v, want prefix %q", err, want)
	}
}
