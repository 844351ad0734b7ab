package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

func tokenCommand(cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "the user id (the token's sub)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" || len(*sub) > 255 {
		return errors.New("token: --sub USER is required (1..255 characters)")
	}
	if *ttl <= 0 {
		return errors.New("token: --ttl must be positive")
	}
	secret := cfg.AuthSecret
	if len(secret) == 0 {
		if cfg.DatabaseURL != "" {
			return errors.New("token: BETTER_AUTH_SECRET is not set, so there is no secret to sign with")
		}
		var err error
		if secret, err = loadOrCreateDevSecret(cfg.DataDir); err != nil {
			return err
		}
	}
	tok, err := mintToken(secret, *sub, cfg.JWTIssuer, cfg.JWTAudience, *ttl, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
