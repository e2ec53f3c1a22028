package testenv

import (
	"fmt"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
)

// SelectText runs query on a new utf8mb4 connection whose session time zone is
// '+00:00' and returns the column names and the rows exactly as the server
// sent them over the text protocol: rows[i][j] is column j of row i, nil for
// NULL. These are the bytes SPEC section 2 defines a row's Redis values by.
//
// It reads go-mysql's raw row packets rather than go-sql-driver's sql.RawBytes:
// go-sql-driver (v1.8+) parses integer, YEAR, FLOAT and DOUBLE text values into
// Go numbers and formats them again, so YEAR 0000 comes back as "0" and DOUBLE
// 1e15 as "1e+15".
func SelectText(addr, user, password, db, query string) ([]string, [][][]byte, error) {
	conn, err := client.Connect(addr, user, password, db)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s as %s: %w", addr, user, err)
	}
	defer conn.Close()
	for _, q := range []string{"SET NAMES utf8mb4", "SET time_zone = '+00:00'"} {
		if _, err := conn.Execute(q); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	res, err := conn.Execute(query)
	if err != nil {
		return nil, nil, fmt.Errorf("running %.200q: %w", query, err)
	}
	defer res.Close()
	if res.Resultset == nil {
		return nil, nil, fmt.Errorf("%.200q returned no result set", query)
	}
	cols := make([]string, len(res.Fields))
	for i, f := range res.Fields {
		cols[i] = string(f.Name)
	}
	rows := make([][][]byte, 0, len(res.RowDatas))
	for _, packet := range res.RowDatas {
		row := make([][]byte, len(cols))
		p := []byte(packet)
		for j := range cols {
			v, isNull, size, err := mysql.LengthEncodedString(p)
			if err != nil {
				return nil, nil, fmt.Errorf("parsing a text row of %.200q: %w", query, err)
			}
			p = p[size:]
			if !isNull {
				row[j] = append([]byte{}, v...) // the packet's buffer is reused after Close
			}
		}
		rows = append(rows, row)
	}
	return cols, rows, nil
}
