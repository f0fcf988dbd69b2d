package span

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// A policy span may declare what it judges in metadata.judges:
//
//	{"entity_types": ["execution"], "where": {"status": "error"}}
//
// entity_types (required) lists the entity types of the spans it wants;
// where (optional) narrows them by top-level text fields, each a value or
// a list of values, all of which must hold. The policy agent then shows
// the policy only those spans, selected in SQL, and the engine wakes the
// agent only for spans some policy may want. A policy without the key
// judges every span. A declaration that is not exactly this shape is
// refused when the span is validated, naming the field: it is never taken
// to mean "every span".

// Judges is a policy's declaration (metadata.judges).
type Judges struct {
	// EntityTypes are the entity types the policy judges.
	EntityTypes []string `json:"entity_types"`
	// Where maps a field of JudgeFields to the values it may have.
	Where map[string][]string `json:"where,omitempty"`
}

// JudgeFields are the span fields a declaration's where may name: short
// text columns, compared for equality in SQL.
var JudgeFields = []string{"status", "who", "did", "this", "name"}

// Limits of a declaration: each entity type is a branch of the agent's
// query, each value a comparison.
const (
	MaxJudgedTypes  = 16
	MaxJudgedValues = 32
)

// Bookkeeping are the entity types the engine writes for itself (cursors,
// quota counters). No policy judges them, so a declaration may not name
// them.
var Bookkeeping = []string{"policy_cursor", "engine_cursor", "quota_counter"}

// judgesOf is the declaration in a policy's metadata: nil when it has none
// (metadata absent, not an object, or without the key judges), else the
// declaration, or the field at fault.
func judgesOf(metadata json.RawMessage) (*Judges, *FieldError) {
	t := bytes.TrimSpace(metadata)
	if len(t) == 0 || t[0] != '{' {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(t, &m); err != nil {
		return nil, nil // not JSON: validation says so on its own
	}
	raw, ok := m["judges"]
	if !ok {
		return nil, nil
	}
	return ParseJudges(raw)
}

// ParseJudges checks the value of metadata.judges and returns it.
func ParseJudges(raw json.RawMessage) (*Judges, *FieldError) {
	const at = "metadata.judges"
	obj, fe := object(at, raw, "an object {\"entity_types\": [...], \"where\": {...}}")
	if fe != nil {
		return nil, fe
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if k != "entity_types" && k != "where" {
			return nil, fieldErr(at+"."+k, "is not part of a declaration (want entity_types and, optionally, where)")
		}
	}
	types, ok := obj["entity_types"]
	if !ok {
		return nil, fieldErr(at+".entity_types", "is required: the entity types the policy judges")
	}
	j := &Judges{}
	if j.EntityTypes, fe = stringList(at+".entity_types", types, MaxJudgedTypes); fe != nil {
		return nil, fe
	}
	for i, t := range j.EntityTypes {
		f := fmt.Sprintf("%s.entity_types[%d]", at, i)
		if r := checkEntityType(t); r != "" {
			return nil, fieldErr(f, "%s", r)
		}
		if slices.Contains(Bookkeeping, t) {
			return nil, fieldErr(f, "%s is the engine's bookkeeping, which no policy judges", t)
		}
		if slices.Contains(j.EntityTypes[:i], t) {
			return nil, fieldErr(f, "%s is listed twice", t)
		}
	}
	if raw, ok := obj["where"]; ok {
		where, fe := object(at+".where", raw, "an object of field: value or [values]")
		if fe != nil {
			return nil, fe
		}
		if len(where) == 0 {
			return nil, fieldErr(at+".where", "must name at least one field (or be left out)")
		}
		j.Where = map[string][]string{}
		for _, k := range slices.Sorted(maps.Keys(where)) {
			f := at + ".where." + k
			if !slices.Contains(JudgeFields, k) {
				return nil, fieldErr(f, "is not a field a declaration filters on (want one of %v)", JudgeFields)
			}
			v := bytes.TrimSpace(where[k])
			if len(v) == 0 || v[0] != '"' {
				vals, fe := stringList(f, v, MaxJudgedValues)
				if fe != nil {
					return nil, fe
				}
				j.Where[k] = vals
				continue
			}
			var one string
			if json.Unmarshal(v, &one) != nil || one == "" {
				return nil, fieldErr(f, "must be a non-empty string or a list of them, got %s", truncate(string(v), 40))
			}
			if len(one) > MaxShortText {
				return nil, fieldErr(f, "is %d bytes, more than the limit of %d", len(one), MaxShortText)
			}
			j.Where[k] = []string{one}
		}
	}
	return j, nil
}

// object decodes raw as a JSON object, or names field as not one.
func object(field string, raw json.RawMessage, want string) (map[string]json.RawMessage, *FieldError) {
	t := bytes.TrimSpace(raw)
	var m map[string]json.RawMessage
	if len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &m) != nil {
		return nil, fieldErr(field, "must be %s, got %s", want, truncate(string(t), 40))
	}
	return m, nil
}

// stringList decodes raw as a list of 1 to limit non-empty strings of at
// most MaxShortText bytes.
func stringList(field string, raw json.RawMessage, limit int) ([]string, *FieldError) {
	var items []json.RawMessage
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '[' || json.Unmarshal(t, &items) != nil {
		return nil, fieldErr(field, "must be a list of strings, got %s", truncate(string(t), 40))
	}
	if len(items) == 0 {
		return nil, fieldErr(field, "must not be empty (a policy that judges nothing has no use)")
	}
	if len(items) > limit {
		return nil, fieldErr(field, "lists %d values, at most %d", len(items), limit)
	}
	out := make([]string, len(items))
	for i, it := range items {
		it = bytes.TrimSpace(it)
		if len(it) == 0 || it[0] != '"' || json.Unmarshal(it, &out[i]) != nil || out[i] == "" {
			return nil, fieldErr(fmt.Sprintf("%s[%d]", field, i), "must be a non-empty string, got %s", truncate(string(it), 40))
		}
		if len(out[i]) > MaxShortText {
			return nil, fieldErr(fmt.Sprintf("%s[%d]", field, i), "is %d bytes, more than the limit of %d", len(out[i]), MaxShortText)
		}
	}
	return out, nil
}

// Admits tells whether a span of entityType whose status is status may be
// one the declaration wants: the other fields of where are not known here,
// so they admit (the engine routes by type and status alone). A nil
// declaration admits everything but bookkeeping.
func (j *Judges) Admits(entityType, status string) bool {
	if j == nil {
		return !slices.Contains(Bookkeeping, entityType)
	}
	if !slices.Contains(j.EntityTypes, entityType) {
		return false
	}
	if vals, ok := j.Where["status"]; ok && !slices.Contains(vals, status) {
		return false
	}
	return true
}
