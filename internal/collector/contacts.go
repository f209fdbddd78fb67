package collector

import "bytes"

// legacyContactKey starts the contact in the JSON of an interaction
// stored before contacts were stored apart from records, where it was
// always the last field. A quote inside a string value is escaped, so
// these bytes occur only as the key.
var legacyContactKey = []byte(`,"contact":{`)

// withoutContact is an interaction's stored JSON without the contact that
// records stored before contacts moved out carry until they expire. It
// never changes js (the store's buffer).
func withoutContact(js []byte) []byte {
	i := bytes.Index(js, legacyContactKey)
	if i < 0 {
		return js
	}
	return append(js[:i:i], '}')
}
