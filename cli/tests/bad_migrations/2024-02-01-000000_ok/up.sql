CREATE TABLE fine (id INT);
