package store

import "github.com/cxop-dev/cxop/internal/survey/engine/kv"

// EngineKV is the survey engine's storage in this store's database: its
// keys start with 's', apart from the records'.
func (s *Store) EngineKV() kv.KV { return kv.Pebble(s.db) }
