package main

import (
	_ "github.com/caarlos0/env/v11"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/gorilla/sessions"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "golang.org/x/time/rate"
)

func main() {}
