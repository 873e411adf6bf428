package cluster

import (
	"encoding/json"
	"strconv"
)

func itoa(i int) string                   { return strconv.Itoa(i) }
func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
