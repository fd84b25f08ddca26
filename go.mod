module github.com/oboexchange/oboexchange

go 1.22
