module promote.example/payments

go 1.22
