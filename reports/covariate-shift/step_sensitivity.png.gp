set terminal pngcairo size 800,500 font 'sans,10'
set output 'step_sensitivity.png'
set datafile separator ','
set title 'Relative change of the last hidden layer''s input after a 1% step on layer 0' noenhanced
set xlabel 'step'
set ylabel '|dh| / |h|'
set grid
set key below noenhanced
set format x '%g'
set logscale y
plot 'sensitivity.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU' ? column(3) : 1/0) with lines lw 2 title 'BN before ReLU', \
     'sensitivity.csv' every ::1 using 2:(strcol(1) eq 'BN after ReLU' ? column(3) : 1/0) with lines lw 2 title 'BN after ReLU', \
     'sensitivity.csv' every ::1 using 2:(strcol(1) eq 'no BN' ? column(3) : 1/0) with lines lw 2 title 'no BN'
