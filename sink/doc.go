// Package sink applies ordered row changes to Redis with pipelined, version-fenced writes.
//
// # Keys
//
// A row lives under <prefix><db>:<table>:<pk>, where <pk> is the primary-key values joined with ':' in key order.
// A per-table key template may replace "${db}:${table}:${pk}"; it may use ${db}, ${table}, ${pk} (all primary-key
// values joined with ':') and ${<primary-key column>}; everything else is literal, so "{user:${pk}}" puts a Redis
// Cluster hash tag around the key. A template must determine the whole primary key (${pk}, or every primary-key
// column) and may name only primary-key columns, so a row's key never changes unless its primary key does.
//
// # Hash format (default)
//
// The key holds a hash with one field per column, named as in change.Table.Columns, whose value is the column's
// bytes as SPEC section 2 renders them. A NULL column has no field. The metadata field "_v" holds the version of
// the change that wrote the row (change.Version text form, 28 lower-case hex digits, comparing byte-wise). Every
// write replaces the whole hash, so a column that became NULL loses its field.
//
// # JSON format
//
// The key holds a string with one JSON object:
//
//	{"_v":"<28 hex digits>","<column>":"<value>",...}
//
// "_v" always comes first, at bytes 7 to 34, so the version can be read with GETRANGE key 7 34 without decoding
// the document. The other members follow in column order. A value that is valid UTF-8 is a JSON string (escaping
// only '"', '\' and control characters); any other value is an object {"b64":"<standard base64 with padding>"}.
// A NULL column has no member.
//
// # Deletes and tombstones
//
// A delete removes the row key and writes a tombstone: a string holding the delete's version under
// TombstoneKey(rowKey), with a TTL (Options.TombstoneTTL, default 24h). The tombstone key carries a hash tag that
// puts it in the same Redis Cluster slot as the row key, so one script sees both.
//
// # Fence
//
// Every write and delete is skipped unless its version is newer than the stored one: the row's "_v", or the
// tombstone's version when the row is absent. A replayed older change therefore can neither overwrite a newer
// row nor bring back a deleted one, and applying a change twice is the same as applying it once. A write that
// lands removes the tombstone. An update that changes the primary key is a fenced delete of the old key and a
// fenced write of the new key, both at the change's version.
package sink
