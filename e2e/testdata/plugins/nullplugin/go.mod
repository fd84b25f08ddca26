module github.com/oboexchange/nullplugin

go 1.22
