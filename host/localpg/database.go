package localpg

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// CreateDatabase creates database name on the server adminURL points to,
// as a copy of template ("" means the server's default, template1). The
// template must have no other sessions connected.
func CreateDatabase(ctx context.Context, adminURL, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if err := execAdmin(ctx, adminURL, sql); err != nil {
		return fmt.Errorf("localpg: create database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name if it exists, disconnecting its sessions
// (WITH (FORCE)).
func DropDatabase(ctx context.Context, adminURL, name string) error {
	sql := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
	if err := execAdmin(ctx, adminURL, sql); err != nil {
		return fmt.Errorf("localpg: drop database %s: %w", name, err)
	}
	return nil
}

func execAdmin(ctx context.Context, adminURL, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// withDatabase returns connString with its database replaced by name. It
// accepts URLs (postgres://...) and keyword/value strings (host=... ...).
func withDatabase(connString, name string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", fmt.Errorf("localpg: parse database URL: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	quoted := strings.ReplaceAll(strings.ReplaceAll(name, `\`, `\\`), `'`, `\'`)
	return strings.TrimSpace(connString) + " dbname='" + quoted + "'", nil
}
