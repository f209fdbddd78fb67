package rollup

import "fmt"

// CheckpointKey is the checkpoint key of one bucket, the form in which a
// copy between stores carries buckets.
func CheckpointKey(kind Kind, name string, k BucketKey) []byte { return bucketKey(kind, name, k) }

// ParseCheckpointKey reverses CheckpointKey.
func ParseCheckpointKey(key []byte) (Kind, string, BucketKey, error) { return parseBucketKey(key) }

// Buckets calls fn with every bucket of the set, encoded as in a
// checkpoint (the set is held locked meanwhile).
func (s *Set) Buckets(fn func(key, value []byte) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := eachBucket(KindTouchpoint, s.touchpoints, fn); err != nil {
		return err
	}
	return eachBucket(KindSurvey, s.surveys, fn)
}

func eachBucket[A aggregate[A]](kind Kind, series map[string]*Series[A], fn func(key, value []byte) error) error {
	for name, ser := range series {
		for r := range ser.buckets {
			for start, a := range ser.buckets[r] {
				v, err := a.MarshalBinary()
				if err != nil {
					return fmt.Errorf("%c %s: %w", kind, name, err)
				}
				if err := fn(bucketKey(kind, name, BucketKey{Resolution(r), start}), v); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
