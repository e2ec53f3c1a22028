-- The least-privilege user binlogsync needs, and a sample table.
CREATE USER IF NOT EXISTS 'binlogsync'@'%' IDENTIFIED BY 'binlogsync';
GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'binlogsync'@'%';
CREATE TABLE IF NOT EXISTS shop.users (
  id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100),
  balance DECIMAL(10,2), created_at DATETIME(3), doc JSON NULL
);
